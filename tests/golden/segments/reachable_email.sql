-- definition: {"reachable": {"channel": "email"}}
-- explanation: People who are reachable by email
-- params: []
SELECT p.user_id FROM profiles p WHERE (p.email IS NOT NULL AND p.pp_6 IS NOT false)
