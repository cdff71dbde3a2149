-- definition: {"profile": {"property": "City", "op": "neq", "value": "Paris"}}
-- explanation: People who whose City is not 'Paris'
-- params: ["Paris"]
SELECT p.user_id FROM profiles p WHERE (p.pp_1 IS NULL OR p.pp_1 <> ?)
