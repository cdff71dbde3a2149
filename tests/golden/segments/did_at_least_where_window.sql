-- definition: {"did": {"event": "Charged", "count": {"op": ">=", "value": 3}, "window": {"last": {"days": 30}}, "where": [{"property": "Amount", "op": "gt", "value": 500}]}}
-- explanation: People who did Charged where Amount > 500 at least 3 times in the last 30 days
-- params: ["Charged", {"timestamp": "2023-10-15T22:13:20"}, 500.0, 3]
SELECT user_id FROM (SELECT e.user_id FROM events e WHERE e.event = ? AND e.ts >= ? AND e.ep_1 > ?) GROUP BY user_id HAVING count(*) >= ?
