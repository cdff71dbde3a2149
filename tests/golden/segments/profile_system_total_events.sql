-- definition: {"profile": {"property": "$total_events", "op": "gte", "value": 5}}
-- explanation: People who whose $total_events ≥ 5
-- params: [5.0]
SELECT p.user_id FROM profiles p WHERE p.event_count >= ?
