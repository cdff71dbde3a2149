-- definition: {"did": {"event": "Charged", "window": {"between": ["2023-11-01T00:00:00Z", 1699827200]}}}
-- explanation: People who did Charged between 2023-11-01 00:00 UTC and 2023-11-12 22:13 UTC
-- params: ["Charged", {"timestamp": "2023-11-01T00:00:00"}, {"timestamp": "2023-11-12T22:13:20"}]
SELECT DISTINCT user_id FROM (SELECT e.user_id FROM events e WHERE e.event = ? AND e.ts >= ? AND e.ts < ?)
