"""The CDNOW purchase log (tests/data/cdnow, from the Lifetimes 0.11.3 wheel) as Nudge events.

Each line (customer id, date YYYYMMDD, number of CDs, dollar value) becomes a ``Charged``
event of identity ``c<id>`` at midnight UTC of its date, with ``Amount`` and ``Quantity``,
imported through the bulk import path (validation, identity, group commits) like
``nudge import``. Message ids are the line numbers: identical lines are distinct purchases.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from nudge.bulk import ingest_chunks
from nudge.store.account import AccountStore

DATA = Path(__file__).resolve().parent.parent / "tests" / "data" / "cdnow" / "CDNOW_master.txt"


def rows(path: Path = DATA) -> Iterator[tuple[int, float, int, float]]:
    """(customer id, epoch seconds of the day, CDs, dollars) per purchase."""
    with path.open() as f:
        next(f)  # header
        for line in f:
            cid, day, cds, dollars = line.split()
            d = dt.datetime.strptime(day, "%Y%m%d").replace(tzinfo=dt.UTC)
            yield int(cid), d.timestamp(), int(cds), float(dollars)


def records(path: Path = DATA) -> Iterator[dict[str, Any]]:
    for i, (cid, ts, cds, dollars) in enumerate(rows(path)):
        yield {"type": "event", "identity": f"c{cid}", "ts": int(ts), "evtName": "Charged",
               "evtData": {"Amount": dollars, "Quantity": cds}, "msgId": f"cdnow-{i}"}


def load(store: AccountStore, path: Path = DATA, quiet: bool = True) -> int:
    """Import the log into ``store``; returns the number of events stored."""
    items = list(records(path))
    chunks = (items[i:i + 20_000] for i in range(0, len(items), 20_000))
    stored, errors = ingest_chunks(store, chunks, store.settings.limits, total=len(items),
                                   label="importing CDNOW", quiet=quiet)
    if errors:
        raise RuntimeError(f"CDNOW rows rejected: {errors[:3]}")
    return stored
