-- definition: {"profile": {"property": "Age", "op": "between", "value": [19, 34]}}
-- explanation: People who whose Age is between 19 and 34
-- params: [19.0, 34.0]
SELECT p.user_id FROM profiles p WHERE p.pp_2 BETWEEN ? AND ?
