-- definition: {"profile": {"property": "Signed Up", "op": "before_days_ago", "value": 30}}
-- explanation: People who whose Signed Up is more than 30 days ago
-- params: [{"timestamp": "2023-10-15T22:13:20"}]
SELECT p.user_id FROM profiles p WHERE p.pp_8 < ?
