-- definition: {"did": {"event": "Charged", "window": {"first_days_after_first_seen": 3}}}
-- explanation: People who did Charged within 3 days of first being seen
-- params: ["Charged", 259200.0]
SELECT DISTINCT user_id FROM (SELECT e.user_id FROM events e JOIN profiles p ON p.user_id = e.user_id WHERE e.event = ? AND e.ts < p.first_seen + to_seconds(?::DOUBLE))
