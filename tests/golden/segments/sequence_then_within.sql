-- definition: {"sequence": {"first": {"event": "Added To Cart"}, "then": {"event": "Charged"}, "within": {"hours": 2}}}
-- explanation: People who did Added To Cart then Charged within 2 hours
-- params: ["Added To Cart", "Charged", 7200.0]
SELECT DISTINCT a.user_id FROM (SELECT e.user_id, e.ts, e.seq FROM events e WHERE e.event = ?) a JOIN (SELECT e.user_id, e.ts, e.seq FROM events e WHERE e.event = ?) b ON a.user_id = b.user_id AND (b.ts > a.ts OR (b.ts = a.ts AND b.seq > a.seq)) AND b.ts <= a.ts + to_seconds(?::DOUBLE)
