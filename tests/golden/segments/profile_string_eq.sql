-- definition: {"profile": {"property": "City", "op": "eq", "value": "Paris"}}
-- explanation: People who whose City is 'Paris'
-- params: ["Paris"]
SELECT p.user_id FROM profiles p WHERE p.pp_1 = ?
