-- definition: {"did": {"event": "Charged", "count": {"op": "<", "value": 0}}}
-- explanation: People who did Charged fewer than 0 times
-- params: []
SELECT user_id FROM profiles WHERE false
