-- definition: {"did": {"event": "x'); DROP TABLE events; --", "where": [{"property": "x'); DROP TABLE events; --", "op": "eq", "value": "x'); DROP TABLE events; --"}]}}
-- explanation: People who did x'); DROP TABLE events; -- where x'); DROP TABLE events; -- is "x'); DROP TABLE events; --"
-- params: ["x'); DROP TABLE events; --", "x'); DROP TABLE events; --"]
SELECT DISTINCT user_id FROM (SELECT e.user_id FROM events e WHERE e.event = ? AND e.ep_8 = ?)
