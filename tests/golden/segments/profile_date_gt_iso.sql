-- definition: {"profile": {"property": "Signed Up", "op": "gt", "value": "2023-10-01T22:13:20Z"}}
-- explanation: People who whose Signed Up > '2023-10-01T22:13:20Z'
-- params: [{"timestamp": "2023-10-01T22:13:20"}]
SELECT p.user_id FROM profiles p WHERE p.pp_8 > ?
