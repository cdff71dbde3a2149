-- definition: {"profile": {"property": "City", "op": "not_in", "value": ["Paris"]}}
-- explanation: People who whose City is none of 'Paris'
-- params: [["Paris"]]
SELECT p.user_id FROM profiles p WHERE (p.pp_1 IS NULL OR NOT list_contains(?::VARCHAR[], p.pp_1))
