-- definition: {"and": [{"profile": {"property": "Age", "op": "gt", "value": 20}}, {"not": {"or": [{"profile": {"property": "City", "op": "eq", "value": "Berlin"}}, {"profile": {"property": "VIP", "op": "eq", "value": true}}]}}]}
-- explanation: People who (whose Age > 20, and not ((whose City is 'Berlin', or whose VIP is true)))
-- params: [20.0, "Berlin", true]
SELECT p.user_id FROM profiles p WHERE (p.pp_2 > ? AND (NOT coalesce((p.pp_1 = ? OR p.pp_3 = ?), false)))
