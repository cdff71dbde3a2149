-- definition: {"profile": {"property": "City", "op": "in", "value": ["Paris", "Berlin"]}}
-- explanation: People who whose City is one of 'Paris', 'Berlin'
-- params: [["Paris", "Berlin"]]
SELECT p.user_id FROM profiles p WHERE list_contains(?::VARCHAR[], p.pp_1)
