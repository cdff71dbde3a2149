-- definition: {"profile": {"property": "Tags", "op": "in", "value": ["silver", 5.0]}}
-- explanation: People who whose Tags is one of 'silver', 5
-- params: [["silver", "5"]]
SELECT p.user_id FROM profiles p WHERE list_has_any(p.pp_4, ?::VARCHAR[])
