-- definition: {"did_not": {"event": "Never Happened"}}
-- explanation: People who did not do Never Happened
-- params: ["Never Happened"]
(SELECT user_id FROM profiles) EXCEPT (SELECT user_id FROM (SELECT e.user_id FROM events e WHERE e.event = ?))
