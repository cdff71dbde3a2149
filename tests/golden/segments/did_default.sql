-- definition: {"did": {"event": "Charged"}}
-- explanation: People who did Charged
-- params: ["Charged"]
SELECT DISTINCT user_id FROM (SELECT e.user_id FROM events e WHERE e.event = ?)
