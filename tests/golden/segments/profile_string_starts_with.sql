-- definition: {"profile": {"property": "City", "op": "starts_with", "value": "Be"}}
-- explanation: People who whose City starts with 'Be'
-- params: ["Be"]
SELECT p.user_id FROM profiles p WHERE starts_with(p.pp_1, ?)
