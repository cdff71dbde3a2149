-- definition: {"or": [{"did": {"event": "App Uninstalled"}}, {"profile": {"property": "Age", "op": "gt", "value": 50}}]}
-- explanation: People who (did App Uninstalled, or whose Age > 50)
-- params: ["App Uninstalled", 50.0]
(SELECT DISTINCT user_id FROM (SELECT e.user_id FROM events e WHERE e.event = ?)) UNION (SELECT p.user_id FROM profiles p WHERE p.pp_2 > ?)
