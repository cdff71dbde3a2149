-- definition: {"did": {"event": "Never Happened"}}
-- explanation: People who did Never Happened
-- params: ["Never Happened"]
SELECT DISTINCT user_id FROM (SELECT e.user_id FROM events e WHERE e.event = ?)
