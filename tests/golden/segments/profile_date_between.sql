-- definition: {"profile": {"property": "Signed Up", "op": "between", "value": [1695680000, 1696544000]}}
-- explanation: People who whose Signed Up is between 1.69568e+09 and 1.69654e+09
-- params: [{"timestamp": "2023-09-25T22:13:20"}, {"timestamp": "2023-10-05T22:13:20"}]
SELECT p.user_id FROM profiles p WHERE p.pp_8 BETWEEN ? AND ?
