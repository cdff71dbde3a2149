-- definition: {"aggregate": {"event": "Charged", "property": "Currency", "fn": "count_distinct", "op": "!=", "value": 1}}
-- explanation: People who did Charged with number of distinct Currency other than 1
-- params: ["Charged", 1.0]
(SELECT user_id FROM profiles) EXCEPT (SELECT user_id FROM (SELECT e.user_id, e.ep_2 AS v FROM events e WHERE e.event = ?) GROUP BY user_id HAVING NOT (coalesce(count(DISTINCT v), 0) <> ?))
