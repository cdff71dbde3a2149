-- definition: {"reachable": {"channel": "push"}}
-- explanation: People who are reachable by push
-- params: ["fcm", "apns"]
SELECT p.user_id FROM profiles p WHERE (p.user_id IN (SELECT user_id FROM identities WHERE kind IN (?, ?)))
