-- definition: {"profile": {"property": "Signed Up", "op": "gt", "value": "2023-10-01T00:00:00Z"}}
-- explanation: People who whose Signed Up > '2023-10-01T00:00:00Z'
-- params: [{"timestamp": "2023-10-01T00:00:00"}]
SELECT p.user_id FROM profiles p WHERE p.pp_8 > ?
