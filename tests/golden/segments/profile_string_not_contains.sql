-- definition: {"profile": {"property": "City", "op": "not_contains", "value": "ar"}}
-- explanation: People who whose City does not contain 'ar'
-- params: ["ar"]
SELECT p.user_id FROM profiles p WHERE (p.pp_1 IS NULL OR NOT contains(p.pp_1, ?))
