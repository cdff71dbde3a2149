-- definition: {"aggregate": {"event": "Charged", "property": "Amount", "fn": "sum", "op": ">=", "value": 5000, "window": {"last": {"days": 90}}}}
-- explanation: People who did Charged with total Amount at least 5000 in the last 90 days
-- params: ["Charged", {"timestamp": "2023-08-16T22:13:20"}, 5000.0]
SELECT user_id FROM (SELECT e.user_id, e.ep_1 AS v FROM events e WHERE e.event = ? AND e.ts >= ?) WHERE v IS NOT NULL GROUP BY user_id HAVING sum(v) >= ?
