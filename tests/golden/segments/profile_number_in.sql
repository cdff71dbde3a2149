-- definition: {"profile": {"property": "Age", "op": "in", "value": [19, 52]}}
-- explanation: People who whose Age is one of 19, 52
-- params: [19.0, 52.0]
SELECT p.user_id FROM profiles p WHERE p.pp_2 IN (?, ?)
