"""The demo data as columns: what ``nudge demo`` loads, without a dict per event.

``demo.generate`` turns the generator's numpy columns into upload-format dicts, which the
ingest path then validates into records and the commit turns back into columns: ~40 µs of
Python per event, most of a default demo's time (docs/benchmarks.md). Here the same model
run (``demo._Demo``: same users, sessions, funnels, rhythm, message ids) comes out in two
parts:

1. every profile and token record first, as upload-format dicts in stream order (~2 per
   user; they go through the ordinary ingest path: validation, identity resolution, the
   anonymous-device merges);
2. the events, in stream order, as Arrow tables of a few hundred thousand rows: ``message_id``,
   ``event``, ``ts`` (epoch seconds), ``user`` (the user's index; identity ``u<index+1>``) and
   one column per event property, named by the property, null where an event lacks it.

Loading (2) after (1) gives the store the record path gives: every event belongs to its
user's identified profile (the anonymous events too: the record path writes them to the
device's profile, which the login record then identifies). ``tests/test_demo_load.py`` holds
the two paths to the same events, profiles, identities and catalogs.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from nudge import demo as d

EVENT_BY_CODE = {
    d.C_LAUNCH: "App Launched", d.C_SESSION: "Session Started", d.C_VIEW: "Product Viewed",
    d.C_SEARCH: "Searched", d.C_CART: "Added To Cart", d.C_CHECKOUT: "Checkout Started",
    d.C_CHARGED: "Charged", d.C_RATED: "Rated", d.C_NVIEW: "Notification Viewed",
    d.C_NCLICK: "Notification Clicked", d.C_UNINSTALL: "App Uninstalled",
}
_EVENT_NAMES = pa.array([EVENT_BY_CODE.get(c, "") for c in range(max(EVENT_BY_CODE) + 1)])


def generate_columns(users: int, events: int, *, seed: int = 7, now: float, days: int = 90,
                     chunk_size: int = 50_000, batch_events: int = 250_000,
                     ) -> Iterator[tuple[str, Any]]:
    """Yield ``("records", [dict, ...])`` chunks of profile/token records, then
    ``("events", pa.Table)`` batches; the same run as ``demo.generate`` with these arguments.
    """
    if users <= 0:
        return
    run = d._Demo(users, events, seed, now, days, chunk_size)
    for ts, kind, row in run.profile_rows():
        yield from (("records", c) for c in run._emit(ts, kind, row, None))
    if run.buf:
        yield "records", run.buf
        run.buf = []
    parts: list[dict[str, np.ndarray]] = []
    held = 0
    for day in range(days):
        E = run._slot(day)[3]
        order = np.argsort(E["ts"], kind="stable")  # _emit's order for the events
        E = {k: v[order] for k, v in E.items()}
        E["msg"] = run.msg_next + np.arange(len(order))
        run.msg_next += len(order)
        parts.append(E)
        held += len(order)
        if held >= batch_events:
            yield "events", event_table(run, _join(parts))
            parts, held = [], 0
    if held:
        yield "events", event_table(run, _join(parts))


def _join(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def event_table(run: d._Demo, E: dict[str, np.ndarray]) -> pa.Table:
    """The events of ``E`` (the generator's columns) with the properties ``_b_*`` give them."""
    code, user, prod, num, opt = E["code"], E["user"], E["prod"], E["num"], E["opt"]
    is_ = {c: code == c for c in EVENT_BY_CODE}

    def any_of(*codes: int) -> np.ndarray:
        m = is_[codes[0]].copy()
        for c in codes[1:]:
            m |= is_[c]
        return m

    view_cart = any_of(d.C_VIEW, d.C_CART)
    launch_session = any_of(d.C_LAUNCH, d.C_SESSION)
    ck_ch = any_of(d.C_CHECKOUT, d.C_CHARGED)
    notif = any_of(d.C_NVIEW, d.C_NCLICK)
    pidx = np.maximum(prod, 0)
    cols: dict[str, pa.Array] = {
        "message_id": pc.binary_join_element_wise(
            run.msg_prefix, pc.cast(pa.array(E["msg"]), pa.string()), ""),
        "event": _EVENT_NAMES.take(pa.array(code.astype(np.int64))),
        "ts": pa.array(E["ts"]),
        "user": pa.array(user),
        "Product ID": _strings(d._PID, pidx, view_cart),
        "Category": _strings(d._PCAT, pidx, view_cart | is_[d.C_CHARGED]),
        "Price": _numbers(d._PRICE[pidx], view_cart),
        "Brand": _strings(d._PBRAND, pidx, is_[d.C_VIEW]),
        "Quantity": _numbers(E["qty"], is_[d.C_CART]),
        "Cart ID": _cart_ids(E["sess"], is_[d.C_CART] | ck_ch),
        "Query": _strings(d._QUERIES, opt, is_[d.C_SEARCH]),
        "Results": _numbers(num, is_[d.C_SEARCH]),
        "Platform": _strings(d.PLATFORMS, np.where(is_[d.C_SESSION], 2, run.plat[user]),
                             launch_session),
        "App Version": _strings(d.APP_VERSIONS, run.ver[user], is_[d.C_LAUNCH]),
        "Session Length": _numbers(num, launch_session),
        "Browser": _strings(d.BROWSERS, run.browser[user], is_[d.C_SESSION]),
        "UTM Source": _strings(d.UTM_SOURCES, opt, is_[d.C_SESSION]),
        "Items": _numbers(num, ck_ch),
        "Value": _numbers(E["amt"], is_[d.C_CHECKOUT]),
        "Amount": _numbers(E["amt"], is_[d.C_CHARGED]),
        "Payment Method": _strings(d.PAYMENT_METHODS, opt, is_[d.C_CHARGED]),
        "Coupon": _strings(d.COUPONS, E["opt2"], is_[d.C_CHARGED] & (E["opt2"] >= 0)),
        "Stars": _numbers(num, is_[d.C_RATED]),
        "Campaign ID": _strings(run.cmp_id, num, notif),
        "Campaign Name": _strings(run.cmp_name, num, notif),
        "Channel": _strings(run.cmp_channel, num, notif),
    }
    return pa.table(cols)


def _strings(values: Sequence[str], idx: np.ndarray, has: np.ndarray) -> pa.Array:
    """``values[idx]`` where ``has``, else null; vectorised (Arrow's take)."""
    if not len(values):
        return pa.nulls(len(idx), pa.string())
    safe = np.where(has, idx, 0).astype(np.int64)
    return pa.array(list(values), pa.string()).take(pa.array(safe, mask=~has))


def _numbers(values: np.ndarray, has: np.ndarray) -> pa.Array:
    return pa.array(values.astype(np.float64), mask=~has)


def _cart_ids(sess: np.ndarray, has: np.ndarray) -> pa.Array:
    """``f"CRT-{s:07d}"`` as ``_b_cart``/``_b_checkout``/``_b_charged`` write it."""
    digits = pc.utf8_lpad(pc.cast(pa.array(sess, mask=~has), pa.string()), width=7, padding="0")
    return pc.binary_join_element_wise("CRT-", digits, "")


__all__ = ["EVENT_BY_CODE", "event_table", "generate_columns"]
