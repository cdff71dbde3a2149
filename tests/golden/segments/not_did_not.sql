-- definition: {"not": {"did_not": {"event": "Charged"}}}
-- explanation: People who not (did not do Charged)
-- params: ["Charged"]
SELECT DISTINCT user_id FROM (SELECT user_id FROM (SELECT e.user_id FROM events e WHERE e.event = ?))
