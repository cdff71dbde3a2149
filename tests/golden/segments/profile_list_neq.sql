-- definition: {"profile": {"property": "Tags", "op": "neq", "value": "gold"}}
-- explanation: People who whose Tags is not 'gold'
-- params: [["gold"]]
SELECT p.user_id FROM profiles p WHERE (p.pp_4 IS NULL OR NOT list_has_any(p.pp_4, ?::VARCHAR[]))
