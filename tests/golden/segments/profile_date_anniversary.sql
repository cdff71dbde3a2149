-- definition: {"profile": {"property": "Birthday", "op": "anniversary_within_days", "value": 7}}
-- explanation: People who whose the anniversary of Birthday is in the next 7 days
-- params: [[1114, 1115, 1116, 1117, 1118, 1119, 1120, 1121]]
SELECT p.user_id FROM profiles p WHERE (month(p.pp_5) * 100 + day(p.pp_5)) IN (SELECT unnest(?::INTEGER[]))
