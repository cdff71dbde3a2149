-- definition: {"did": {"event": "Charged", "count": {"op": "=", "value": 0}, "window": {"last": {"days": 30}}}}
-- explanation: People who did Charged exactly 0 times in the last 30 days
-- params: ["Charged", {"timestamp": "2023-10-15T22:13:20"}]
(SELECT user_id FROM profiles) EXCEPT (SELECT user_id FROM (SELECT e.user_id FROM events e WHERE e.event = ? AND e.ts >= ?))
