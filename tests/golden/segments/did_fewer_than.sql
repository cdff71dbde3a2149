-- definition: {"did": {"event": "Charged", "count": {"op": "<", "value": 3}}}
-- explanation: People who did Charged fewer than 3 times
-- params: ["Charged", 3]
(SELECT user_id FROM profiles) EXCEPT (SELECT user_id FROM (SELECT e.user_id FROM events e WHERE e.event = ?) GROUP BY user_id HAVING count(*) >= ?)
