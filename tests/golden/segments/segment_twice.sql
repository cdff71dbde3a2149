-- definition: {"or": [{"segment": {"id": 1}}, {"and": [{"segment": {"id": 2}}, {"segment": {"id": 1}}]}]}
-- explanation: People who (are in segment #1, or (are in segment #2, and are in segment #1))
-- params: []
(SELECT user_id FROM _segment_1) UNION ((SELECT user_id FROM _segment_2) INTERSECT (SELECT user_id FROM _segment_1))
