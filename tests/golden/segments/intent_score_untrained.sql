-- definition: {"intent_score": {"goal": 1, "op": ">=", "value": 0.5}}
-- explanation: People who have a score at least 0.5 for goal #1
-- params: []
SELECT user_id FROM profiles WHERE false
