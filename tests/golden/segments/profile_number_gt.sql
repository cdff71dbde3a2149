-- definition: {"profile": {"property": "Age", "op": "gt", "value": 30}}
-- explanation: People who whose Age > 30
-- params: [30.0]
SELECT p.user_id FROM profiles p WHERE p.pp_2 > ?
