-- definition: {"profile": {"property": "$last_seen", "op": "lt", "value": 1699928000}}
-- explanation: People who whose $last_seen < 1.69993e+09
-- params: [{"timestamp": "2023-11-14T02:13:20"}]
SELECT p.user_id FROM profiles p WHERE p.last_seen < ?
