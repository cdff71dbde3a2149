"""``funnel_match.ordered_by_step`` (the ordered funnel without groups, per step on sorted
keys) against ``funnel_match.ordered`` over ``Streams`` (the general pass, checked against
the reference evaluator and windowFunnel in test_analytics_funnels.py) on random rows:
distinct times (answered with µs keys), many equal times and rows matching several steps
(answered with (t, seq) ranks), per-step windows."""

from __future__ import annotations

import numpy as np
import pytest

from nudge.query.analytics import funnel_match
from nudge.query.analytics.funnel_match import NO_LIMIT, Windows
from nudge.query.analytics.streams import Streams


def _agree(rng: np.random.Generator, times: int, steps: int, w: Windows, shared: bool) -> None:
    """Random rows of 300 users; ``shared``: some rows match several steps."""
    n = 4000
    u = rng.integers(5, 300, n)
    t = rng.integers(0, times, n)
    seq = rng.permutation(n)
    mask = rng.integers(0, 1 << steps, n) if shared else 1 << rng.integers(0, steps, n)
    mask = np.where(rng.random(n) < 0.8, mask, mask & ~1)  # 20% do not enter
    per_step = [(u[m], t[m], seq[m]) for m in ((mask & (1 << k)) != 0 for k in range(steps))]
    users, got = funnel_match.ordered_by_step(per_step, w)
    rows = mask != 0
    s = Streams.build({"u": u[rows], "t": t[rows], "seq": seq[rows], "m": mask[rows]}, ("u",))
    want = funnel_match.ordered(s, s.rows["m"], w)
    reached = want.level > 0
    assert users.tolist() == s.keys["u"][reached].tolist()
    assert got.level.tolist() == want.level[reached].tolist()
    for k in range(1, steps):
        assert got.first[k].tolist() == want.first[k][reached].tolist()
    assert (got.level >= 3).sum() > 10  # the data exercise the later steps


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize(("times", "shared", "ranked"), [
    (10**12, False, False), (10**12, True, True), (40, False, True)])
def test_ordered_by_step_agrees_with_streams(seed: int, times: int, shared: bool, ranked: bool,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    ranks = funnel_match._ranks
    used: list[int] = []
    monkeypatch.setattr(funnel_match, "_ranks", lambda *a: used.append(1) or ranks(*a))
    rng = np.random.default_rng(seed)
    window = times // 4
    _agree(rng, times, 3, Windows(window, (0, NO_LIMIT, NO_LIMIT)), shared)
    _agree(rng, times, 4, Windows(window, (0, window // 3, NO_LIMIT, window // 2)), shared)
    assert bool(used) == ranked  # which key form answered
