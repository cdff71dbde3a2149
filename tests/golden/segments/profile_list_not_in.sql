-- definition: {"profile": {"property": "Tags", "op": "not_in", "value": ["gold", "silver"]}}
-- explanation: People who whose Tags is none of 'gold', 'silver'
-- params: [["gold", "silver"]]
SELECT p.user_id FROM profiles p WHERE (p.pp_4 IS NULL OR NOT list_has_any(p.pp_4, ?::VARCHAR[]))
