-- definition: {"profile": {"property": "Age", "op": "lte", "value": 34.5}}
-- explanation: People who whose Age ≤ 34.5
-- params: [34.5]
SELECT p.user_id FROM profiles p WHERE p.pp_2 <= ?
