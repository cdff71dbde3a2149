-- definition: {"first_time": {"event": "Charged", "window": {"last": {"days": 7}}}}
-- explanation: People who did Charged for the first time in the last 1 week
-- params: ["Charged", {"timestamp": "2023-11-07T22:13:20"}]
SELECT user_id FROM (SELECT e.user_id, e.ts FROM events e WHERE e.event = ?) GROUP BY user_id HAVING min(ts) >= ?
