-- definition: {"did": {"event": "Charged", "count": {"op": "=", "value": 2}}}
-- explanation: People who did Charged exactly 2 times
-- params: ["Charged", 2]
SELECT user_id FROM (SELECT e.user_id FROM events e WHERE e.event = ?) GROUP BY user_id HAVING count(*) = ?
