-- definition: {"did": {"event": "Charged", "count": {"op": ">", "value": 1}}}
-- explanation: People who did Charged more than 1 time
-- params: ["Charged", 1]
SELECT user_id FROM (SELECT e.user_id FROM events e WHERE e.event = ?) GROUP BY user_id HAVING count(*) > ?
