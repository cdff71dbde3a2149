-- definition: {"profile": {"property": "VIP", "op": "eq", "value": true}}
-- explanation: People who whose VIP is true
-- params: [true]
SELECT p.user_id FROM profiles p WHERE p.pp_3 = ?
