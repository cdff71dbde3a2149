-- definition: {"last_did": {"event": "Added To Cart", "more_than": {"hours": 8}}}
-- explanation: People who last did Added To Cart more than 8 hours ago
-- params: ["Added To Cart", {"timestamp": "2023-11-14T14:13:20"}]
(SELECT user_id FROM profiles) EXCEPT (SELECT user_id FROM (SELECT e.user_id FROM events e WHERE e.event = ? AND e.ts >= ?))
