-- definition: {"or": [{"profile": {"property": "City", "op": "eq", "value": "Paris"}}, {"not": {"reachable": {"channel": "email"}}}]}
-- explanation: People who (whose City is 'Paris', or not (are reachable by email))
-- params: ["Paris"]
SELECT p.user_id FROM profiles p WHERE (p.pp_1 = ? OR (NOT coalesce((p.email IS NOT NULL AND p.pp_6 IS NOT false), false)))
