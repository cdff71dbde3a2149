-- definition: {"did": {"event": "App Launched", "where": [{"property": "App Version", "op": "starts_with", "value": "2."}, {"property": "Country", "op": "eq", "value": "FR"}], "window": {"last": {"days": 30}}}}
-- explanation: People who did App Launched where App Version starts with '2.' and Country is 'FR' in the last 30 days
-- params: ["App Launched", {"timestamp": "2023-10-15T22:13:20"}, "2.", "FR"]
SELECT DISTINCT user_id FROM (SELECT e.user_id FROM events e WHERE e.event = ? AND e.ts >= ? AND starts_with(e.ep_6, ?) AND e.ep_7 = ?)
