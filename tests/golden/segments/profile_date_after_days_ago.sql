-- definition: {"profile": {"property": "Signed Up", "op": "after_days_ago", "value": 30}}
-- explanation: People who whose Signed Up is within the last 30 days
-- params: [{"timestamp": "2023-10-15T22:13:20"}]
SELECT p.user_id FROM profiles p WHERE p.pp_8 >= ?
