-- definition: {"first_time": {"event": "Added To Cart", "window": {"first_days_after_first_seen": 1}}}
-- explanation: People who did Added To Cart for the first time within 1 day of first being seen
-- params: ["Added To Cart", 86400.0]
SELECT b.user_id FROM (SELECT e.user_id, e.ts FROM events e WHERE e.event = ?) b JOIN profiles p USING (user_id) GROUP BY b.user_id, p.first_seen HAVING min(b.ts) < p.first_seen + to_seconds(?::DOUBLE)
