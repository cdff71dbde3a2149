-- definition: {"did": {"event": "Charged", "where": [{"property": "Items", "op": "contains", "value": "b"}]}}
-- explanation: People who did Charged where Items contains 'b'
-- params: ["Charged", ["b"]]
SELECT DISTINCT user_id FROM (SELECT e.user_id FROM events e WHERE e.event = ? AND list_has_any(e.ep_3, ?::VARCHAR[]))
