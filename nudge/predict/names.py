"""Names the segment language and the predict package share (no imports: the segment model
imports this module, and the predict package imports the segment model)."""

from __future__ import annotations

# The standard RFM map over the recency x frequency grid (scores 1-5). Every (R, F) cell is
# in exactly one segment; tests check that the map is complete and non-overlapping.
RFM_SEGMENTS: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "champions": ((5,), (4, 5)),
    "loyal": ((3, 4), (4, 5)),
    "potential_loyalists": ((4, 5), (2, 3)),
    "new_customers": ((5,), (1,)),
    "promising": ((4,), (1,)),
    "need_attention": ((3,), (3,)),
    "about_to_sleep": ((3,), (1, 2)),
    "at_risk": ((1, 2), (3, 4)),
    "cant_lose_them": ((1, 2), (5,)),
    "hibernating": ((1, 2), (1, 2)),
}
RFM_LABELS = {
    "champions": "Champions", "loyal": "Loyal", "potential_loyalists": "Potential Loyalists",
    "new_customers": "New Customers", "promising": "Promising",
    "need_attention": "Need Attention", "about_to_sleep": "About to Sleep",
    "at_risk": "At Risk", "cant_lose_them": "Can't Lose Them", "hibernating": "Hibernating",
    "no_purchases": "No purchases",
}
# People without a purchase in the lookback: not scored, reported on their own.
NO_PURCHASES = "no_purchases"
RFM_SEGMENT_NAMES = (*RFM_SEGMENTS, NO_PURCHASES)

# Intent buckets, from the highest scores down.
BUCKETS = ("most_likely", "moderately_likely", "least_likely")
