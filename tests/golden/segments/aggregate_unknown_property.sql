-- definition: {"aggregate": {"event": "Charged", "property": "Nope", "fn": "sum", "op": "<", "value": 1}}
-- explanation: People who did Charged with total Nope less than 1
-- params: []
(SELECT user_id FROM profiles) EXCEPT (SELECT user_id FROM profiles WHERE false)
