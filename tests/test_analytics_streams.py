"""``streams.stream_order`` (the per-user ordering of funnels and flows) against
``np.lexsort`` on random rows: one and two partition keys, ties in time broken by ``seq``,
negative keys, and keys too wide for the packed int64 sort (the radix passes)."""

from __future__ import annotations

import numpy as np
import pytest

from nudge.query.analytics.streams import stream_order


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("key_range", [(0, 50), (-1000, 10**6), (0, 2**40), (0, 2**55)])
def test_stream_order_is_lexicographic(seed: int, key_range: tuple[int, int]) -> None:
    rng = np.random.default_rng(seed)
    n = 5000
    u = rng.integers(*key_range, n)
    g = rng.integers(0, 3, n)
    t = np.concatenate([np.sort(rng.integers(0, 400, k)) for k in (2000, 1800, 1200)])
    seq = rng.permutation(n)  # arrival order, unrelated to time: ties must follow it
    assert len(np.unique(t)) < n  # many equal times
    assert stream_order([u], t, seq).tolist() == np.lexsort((seq, t, u)).tolist()
    assert stream_order([u, g], t, seq).tolist() == np.lexsort((seq, t, g, u)).tolist()


def test_stream_order_of_nothing() -> None:
    empty = np.zeros(0, dtype=np.int64)
    assert stream_order([empty], empty, empty).tolist() == []
