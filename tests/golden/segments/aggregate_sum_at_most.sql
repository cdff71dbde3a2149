-- definition: {"aggregate": {"event": "Charged", "property": "Amount", "fn": "sum", "op": "<=", "value": 100}}
-- explanation: People who did Charged with total Amount at most 100
-- params: ["Charged", 100.0]
(SELECT user_id FROM profiles) EXCEPT (SELECT user_id FROM (SELECT e.user_id, e.ep_1 AS v FROM events e WHERE e.event = ?) GROUP BY user_id HAVING NOT (coalesce(sum(v), 0) <= ?))
