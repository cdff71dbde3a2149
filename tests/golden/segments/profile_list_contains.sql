-- definition: {"profile": {"property": "Tags", "op": "contains", "value": "gold"}}
-- explanation: People who whose Tags contains 'gold'
-- params: [["gold"]]
SELECT p.user_id FROM profiles p WHERE list_has_any(p.pp_4, ?::VARCHAR[])
