-- definition: {"aggregate": {"event": "Charged", "property": "Amount", "fn": "max", "op": "=", "value": 800, "where": [{"property": "Currency", "op": "eq", "value": "USD"}]}}
-- explanation: People who did Charged where Currency is 'USD' with largest Amount exactly 800
-- params: ["Charged", "USD", 800.0]
SELECT user_id FROM (SELECT e.user_id, e.ep_1 AS v FROM events e WHERE e.event = ? AND e.ep_2 = ?) WHERE v IS NOT NULL GROUP BY user_id HAVING max(v) = ?
