-- definition: {"reachable": {"channel": "webpush"}}
-- explanation: People who are reachable by webpush
-- params: ["webpush", "webpush"]
SELECT p.user_id FROM profiles p WHERE (p.user_id IN (SELECT user_id FROM identities WHERE kind IN (?, ?)))
