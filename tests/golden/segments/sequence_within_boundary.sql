-- definition: {"sequence": {"first": {"event": "Added To Cart"}, "then": {"event": "Charged"}, "within": {"hours": 1}, "window": {"last": {"days": 2}}}}
-- explanation: People who did Added To Cart then Charged within 1 hour in the last 2 days
-- params: ["Added To Cart", {"timestamp": "2023-11-12T22:13:20"}, "Charged", {"timestamp": "2023-11-12T22:13:20"}, 3600.0]
SELECT DISTINCT a.user_id FROM (SELECT e.user_id, e.ts, e.seq FROM events e WHERE e.event = ? AND e.ts >= ?) a JOIN (SELECT e.user_id, e.ts, e.seq FROM events e WHERE e.event = ? AND e.ts >= ?) b ON a.user_id = b.user_id AND (b.ts > a.ts OR (b.ts = a.ts AND b.seq > a.seq)) AND b.ts <= a.ts + to_seconds(?::DOUBLE)
