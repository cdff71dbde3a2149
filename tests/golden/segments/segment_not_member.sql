-- definition: {"segment": {"id": 1, "member": false}}
-- explanation: People who are not in segment #1
-- params: []
(SELECT user_id FROM profiles) EXCEPT (SELECT user_id FROM _segment_1)
