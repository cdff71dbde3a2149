-- definition: {"profile": {"property": "$email", "op": "exists"}}
-- explanation: People who whose $email is set
-- params: []
SELECT p.user_id FROM profiles p WHERE p.email IS NOT NULL
