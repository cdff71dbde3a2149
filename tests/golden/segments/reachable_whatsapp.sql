-- definition: {"reachable": {"channel": "whatsapp"}}
-- explanation: People who are reachable by whatsapp
-- params: []
SELECT p.user_id FROM profiles p WHERE (p.phone IS NOT NULL)
