-- definition: {"profile": {"property": "City\") OR 1=1 --", "op": "eq", "value": "Paris"}}
-- explanation: People who whose City") OR 1=1 -- is 'Paris'
-- params: []
SELECT p.user_id FROM profiles p WHERE false
