-- definition: {"profile": {"property": "Nope", "op": "eq", "value": 1}}
-- explanation: People who whose Nope is 1
-- params: []
SELECT p.user_id FROM profiles p WHERE false
