-- definition: {"profile": {"property": "Plan", "op": "in", "value": ["x'); DROP TABLE events; --", "') OR true --"]}}
-- explanation: People who whose Plan is one of "x'); DROP TABLE events; --", "') OR true --"
-- params: [["x'); DROP TABLE events; --", "') OR true --"]]
SELECT p.user_id FROM profiles p WHERE list_contains(?::VARCHAR[], p.pp_7)
