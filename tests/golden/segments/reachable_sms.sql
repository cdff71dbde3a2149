-- definition: {"reachable": {"channel": "sms"}}
-- explanation: People who are reachable by sms
-- params: []
SELECT p.user_id FROM profiles p WHERE (p.phone IS NOT NULL)
