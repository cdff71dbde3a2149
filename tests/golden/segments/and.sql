-- definition: {"and": [{"did": {"event": "Charged"}}, {"profile": {"property": "City", "op": "eq", "value": "Paris"}}]}
-- explanation: People who (did Charged, and whose City is 'Paris')
-- params: ["Charged", "Paris"]
SELECT DISTINCT user_id FROM (SELECT e.user_id FROM events e WHERE e.event = ? AND e.user_id IN (SELECT p.user_id FROM profiles p WHERE p.pp_1 = ?))
