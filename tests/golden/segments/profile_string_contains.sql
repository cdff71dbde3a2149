-- definition: {"profile": {"property": "City", "op": "contains", "value": "ar"}}
-- explanation: People who whose City contains 'ar'
-- params: ["ar"]
SELECT p.user_id FROM profiles p WHERE contains(p.pp_1, ?)
