-- definition: {"profile": {"property": "Nope", "op": "neq", "value": 1}}
-- explanation: People who whose Nope is not 1
-- params: []
SELECT p.user_id FROM profiles p WHERE true
