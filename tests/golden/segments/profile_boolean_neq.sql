-- definition: {"profile": {"property": "VIP", "op": "neq", "value": true}}
-- explanation: People who whose VIP is not true
-- params: [true]
SELECT p.user_id FROM profiles p WHERE (p.pp_3 IS NULL OR p.pp_3 <> ?)
