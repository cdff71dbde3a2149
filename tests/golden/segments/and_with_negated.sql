-- definition: {"and": [{"did": {"event": "Charged"}}, {"did_not": {"event": "App Uninstalled"}}]}
-- explanation: People who (did Charged, and did not do App Uninstalled)
-- params: ["Charged", "App Uninstalled"]
(SELECT DISTINCT user_id FROM (SELECT e.user_id FROM events e WHERE e.event = ?)) EXCEPT (SELECT user_id FROM (SELECT e.user_id FROM events e WHERE e.event = ?))
