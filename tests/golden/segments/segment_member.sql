-- definition: {"segment": {"id": 1}}
-- explanation: People who are in segment #1
-- params: []
SELECT user_id FROM _segment_1
