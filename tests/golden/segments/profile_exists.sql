-- definition: {"profile": {"property": "City", "op": "exists"}}
-- explanation: People who whose City is set
-- params: []
SELECT p.user_id FROM profiles p WHERE p.pp_1 IS NOT NULL
