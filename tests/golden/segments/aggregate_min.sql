-- definition: {"aggregate": {"event": "Charged", "property": "Amount", "fn": "min", "op": "<", "value": 100}}
-- explanation: People who did Charged with smallest Amount less than 100
-- params: ["Charged", 100.0]
SELECT user_id FROM (SELECT e.user_id, e.ep_1 AS v FROM events e WHERE e.event = ?) WHERE v IS NOT NULL GROUP BY user_id HAVING min(v) < ?
