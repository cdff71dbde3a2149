-- definition: {"profile": {"property": "Tags", "op": "eq", "value": 5}}
-- explanation: People who whose Tags is 5
-- params: [["5"]]
SELECT p.user_id FROM profiles p WHERE list_has_any(p.pp_4, ?::VARCHAR[])
