-- definition: {"profile": {"property": "Renewal", "op": "within_next_days", "value": 7}}
-- explanation: People who whose Renewal is in the next 7 days
-- params: [{"timestamp": "2023-11-14T22:13:20"}, {"timestamp": "2023-11-21T22:13:20"}]
SELECT p.user_id FROM profiles p WHERE (p.pp_9 >= ? AND p.pp_9 < ?)
