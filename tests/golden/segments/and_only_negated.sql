-- definition: {"and": [{"not": {"did": {"event": "Charged"}}}, {"did_not": {"event": "App Launched"}}]}
-- explanation: People who (not (did Charged), and did not do App Launched)
-- params: ["Charged", "App Launched"]
(SELECT user_id FROM profiles) EXCEPT ((SELECT DISTINCT user_id FROM (SELECT e.user_id FROM events e WHERE e.event = ?)) UNION (SELECT user_id FROM (SELECT e.user_id FROM events e WHERE e.event = ?)))
