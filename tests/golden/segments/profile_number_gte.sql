-- definition: {"profile": {"property": "Age", "op": "gte", "value": 34}}
-- explanation: People who whose Age ≥ 34
-- params: [34.0]
SELECT p.user_id FROM profiles p WHERE p.pp_2 >= ?
