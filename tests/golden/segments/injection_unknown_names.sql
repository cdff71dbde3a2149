-- definition: {"did": {"event": "'; DROP TABLE events; --", "where": [{"property": "\" OR 1=1 --", "op": "neq", "value": "' OR '1'='1"}]}}
-- explanation: People who did '; DROP TABLE events; -- where " OR 1=1 -- is not "' OR '1'='1"
-- params: ["'; DROP TABLE events; --"]
SELECT DISTINCT user_id FROM (SELECT e.user_id FROM events e WHERE e.event = ? AND true)
