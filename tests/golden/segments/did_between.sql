-- definition: {"did": {"event": "Charged", "window": {"between": ["2023-10-31T22:13:20Z", 1699827200]}}}
-- explanation: People who did Charged between 2023-10-31 22:13 UTC and 2023-11-12 22:13 UTC
-- params: ["Charged", {"timestamp": "2023-10-31T22:13:20"}, {"timestamp": "2023-11-12T22:13:20"}]
SELECT DISTINCT user_id FROM (SELECT e.user_id FROM events e WHERE e.event = ? AND e.ts >= ? AND e.ts < ?)
