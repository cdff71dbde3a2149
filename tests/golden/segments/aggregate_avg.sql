-- definition: {"aggregate": {"event": "Charged", "property": "Amount", "fn": "avg", "op": ">", "value": 600}}
-- explanation: People who did Charged with average Amount more than 600
-- params: ["Charged", 600.0]
SELECT user_id FROM (SELECT e.user_id, e.ep_1 AS v FROM events e WHERE e.event = ?) WHERE v IS NOT NULL GROUP BY user_id HAVING avg(v) > ?
