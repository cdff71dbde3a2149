-- definition: {"did": {"event": "App Launched", "where": [{"property": "Paid", "op": "neq", "value": true}, {"property": "Platform", "op": "starts_with", "value": "and"}]}}
-- explanation: People who did App Launched where Paid is not true and Platform starts with 'and'
-- params: ["App Launched", true, "and"]
SELECT DISTINCT user_id FROM (SELECT e.user_id FROM events e WHERE e.event = ? AND (e.ep_5 IS NULL OR e.ep_5 <> ?) AND starts_with(e.ep_4, ?))
