-- definition: {"profile": {"property": "City", "op": "not_exists"}}
-- explanation: People who whose City is not set
-- params: []
SELECT p.user_id FROM profiles p WHERE p.pp_1 IS NULL
