-- definition: {"intent_bucket": {"goal": 1, "in": ["most_likely"]}}
-- explanation: People who are most_likely for goal #1
-- params: []
SELECT user_id FROM profiles WHERE false
