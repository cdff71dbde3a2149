-- definition: {"first_time": {"event": "App Launched", "window": {"between": [1695248000, 1696544000]}}}
-- explanation: People who did App Launched for the first time between 2023-09-20 22:13 UTC and 2023-10-05 22:13 UTC
-- params: ["App Launched", {"timestamp": "2023-09-20T22:13:20"}, {"timestamp": "2023-10-05T22:13:20"}]
SELECT user_id FROM (SELECT e.user_id, e.ts FROM events e WHERE e.event = ?) GROUP BY user_id HAVING min(ts) >= ? AND min(ts) < ?
