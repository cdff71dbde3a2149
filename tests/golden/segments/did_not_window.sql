-- definition: {"did_not": {"event": "Charged", "window": {"last": {"hours": 12}}}}
-- explanation: People who did not do Charged in the last 12 hours
-- params: ["Charged", {"timestamp": "2023-11-14T10:13:20"}]
(SELECT user_id FROM profiles) EXCEPT (SELECT user_id FROM (SELECT e.user_id FROM events e WHERE e.event = ? AND e.ts >= ?))
