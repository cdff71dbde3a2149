"""Large demo-shaped data sets, written straight into the stores' physical layouts.

Ingesting 100M events through the upload path takes hours on two cores, and the segment
benchmark measures queries, not ingest. So this module generates the data vectorised with
numpy, one day at a time, and writes:

1. ``reference.duckdb``: the plain data as an analyst would load it: ``events`` in time
   (arrival) order with one typed column per property (``amount``, ``category``, ...), and
   ``profiles`` with one column per profile property. The hand-written DuckDB queries run
   on it, and the chDB (ClickHouse) tables are loaded from it.
2. an account store (``nudge.duckdb``) in the store's own physical layout: the schema and
   catalog tables of ``AccountStore``, ``events_sorted`` ordered by (event, ts) as one run
   (fully merged), ``ep_<n>`` / ``pp_<n>`` columns registered in ``property_catalog``,
   profiles, identities, the event catalog and ``compacted_through``; and on request
   (``runs_store``) the same events as unmerged compaction runs of
   ``RUN_ROWS`` (1,000,000) arrivals each.

The shape follows ``nudge demo`` (its event names, cities and categories): 90 days of an
e-commerce app, heavy-tailed (Pareto) user activity, signups spread over the window (40% of
users before it), churners who stop (half of them uninstall the app when they leave), buyers
and browsers, ``Charged`` ~3% of events with a log-normal ``Amount`` that also varies by
user. Every timestamp is unique (microseconds), so "before/after" never depends on ties.

Everything is a pure function of (users, events, seed, now, days).
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from nudge.config import load_settings
from nudge.demo import APP_VERSIONS, CATEGORIES, CITIES, PAYMENT_METHODS, PLATFORMS
from nudge.store.account import AccountStore
from nudge.store.catalog import SQL_TYPES

DAY_US = 86_400 * 1_000_000
# Events per compaction run in the "runs" layouts: the store's compaction threshold when
# these data sets were first built (NUDGE_COMPACT_THRESHOLD_ROWS is 250,000 since; fixed here
# so that the 100M data sets, hours to build, stay valid).
RUN_ROWS = 1_000_000
# A fixed "now" (2026-01-01 00:00 UTC) so that every run sees the same windows.
NOW = 1_767_225_600.0

# event name -> share of all events (App Uninstalled comes from churn, not from a share)
EVENT_SHARES = {
    "App Launched": 0.20, "Session Started": 0.05, "Product Viewed": 0.38, "Searched": 0.10,
    "Added To Cart": 0.09, "Checkout Started": 0.045, "Charged": 0.03, "Rated": 0.004,
    "Notification Viewed": 0.07, "Notification Clicked": 0.021,
}
BUYER_EVENTS = {"Added To Cart", "Checkout Started", "Charged", "Rated"}

# event properties: catalog name, reference column, catalog type
EVENT_PROPS = [
    ("Amount", "amount", "number"), ("Category", "category", "string"),
    ("Price", "price", "number"), ("Product ID", "product_id", "string"),
    ("Quantity", "quantity", "number"), ("Payment Method", "payment_method", "string"),
    ("Platform", "platform", "string"), ("App Version", "app_version", "string"),
    ("Query", "query", "string"), ("Campaign ID", "campaign_id", "string"),
    ("Stars", "stars", "number"),
]
PROPS_OF = {
    "App Launched": ("platform", "app_version"), "Session Started": ("platform",),
    "Product Viewed": ("product_id", "category", "price"), "Searched": ("query",),
    "Added To Cart": ("product_id", "category", "price", "quantity"),
    "Checkout Started": ("amount",), "Charged": ("amount", "category", "payment_method"),
    "Rated": ("stars",), "Notification Viewed": ("campaign_id",),
    "Notification Clicked": ("campaign_id",), "App Uninstalled": (),
}
PROFILE_PROPS = [
    ("City", "city", "string"), ("Country", "country", "string"),
    ("Gender", "gender", "string"), ("Age", "age", "number"),
    ("Signup Date", "signup_date", "date"), ("Platform", "platform", "string"),
    ("Customer Type", "customer_type", "string"), ("MSG-email", "msg_email", "boolean"),
    ("MSG-push", "msg_push", "boolean"),
]
CITY_NAMES = tuple(c[0] for c in CITIES)
CATEGORY_NAMES = tuple(c[0] for c in CATEGORIES)
PRODUCT_IDS = tuple(f"{c[1]}-{1001 + j}" for c in CATEGORIES for j in range(150))
QUERIES = tuple(q for c in CATEGORIES for q in c[6])
CAMPAIGNS = tuple(f"CMP-{i:03d}" for i in range(1, 41))
CUSTOMER_TYPES = ("VIP", "Regular", "New", "Prospect")
GENDERS = ("F", "M", "X")


@dataclass
class DatasetInfo:
    users: int
    events: int
    seed: int
    now: float
    days: int
    build_seconds: float = 0.0
    version: int = 2  # of the generator: a data set built by another version is rebuilt

    def matches(self, other: DatasetInfo) -> bool:
        a, b = asdict(self), asdict(other)
        a.pop("build_seconds"), b.pop("build_seconds")
        return a == b


def _dict_array(values: tuple[str, ...], idx: np.ndarray) -> pa.Array:
    return pa.DictionaryArray.from_arrays(pa.array(idx.astype(np.int32)), pa.array(values))


def _cdf(p: np.ndarray) -> np.ndarray:
    c = np.cumsum(np.asarray(p, dtype=float))
    return c / c[-1]


class _Generator:
    def __init__(self, users: int, events: int, seed: int, now: float, days: int) -> None:
        self.U, self.N, self.seed, self.days = users, events, seed, days
        self.now_us = int(now * 1_000_000)
        self.start_us = self.now_us - days * DAY_US
        rng = np.random.default_rng([seed, 0])
        U = users
        # Signups: 40% before the window (up to a year), the rest spread over it with growth.
        pre = rng.random(U) < 0.40
        signup = np.where(
            pre, self.start_us - (rng.random(U) * 365 * DAY_US).astype(np.int64),
            self.start_us + (np.sqrt(rng.random(U)) * days * DAY_US).astype(np.int64))
        # Internal ids are given in order of first appearance, i.e. signup order.
        signup.sort()
        self.signup = signup
        self.weight = np.minimum(rng.pareto(1.3, U) + 0.05, 400.0)  # heavy-tailed activity
        self.buyer = rng.random(U) < 0.62
        churner = rng.random(U) < 0.20
        life = (rng.exponential(14.0, U) * DAY_US).astype(np.int64) + DAY_US
        self.churn = np.where(churner, signup + life, np.iinfo(np.int64).max)
        self.uninstall = churner & (rng.random(U) < 0.5) & (self.churn < self.now_us) & (
            self.churn >= self.start_us)
        self.spend = rng.normal(0.0, 0.6, U)  # per-user log spend level
        self.city = np.searchsorted(_cdf(np.array([c[4] for c in CITIES])), rng.random(U))
        self.platform = rng.choice(3, U, p=[0.55, 0.35, 0.10])
        self.version = rng.choice(len(APP_VERSIONS), U, p=[0.4, 0.25, 0.2, 0.1, 0.05])
        self.uninstall_ts = np.sort(self.churn[self.uninstall])
        self.uninstall_uid = np.argsort(self.churn[self.uninstall], kind="stable")
        self.uninstall_uid = np.flatnonzero(self.uninstall)[self.uninstall_uid] + 1
        n_regular = events - int(self.uninstall.sum())
        dow = np.array([0.96, 0.93, 0.95, 0.98, 1.03, 1.14, 1.20])
        growth = np.linspace(0.85, 1.15, days)
        self.per_day = rng.multinomial(n_regular, _cdf_p(dow[np.arange(days) % 7] * growth))
        self.seq = 0

    def profiles(self) -> pa.Table:
        rng = np.random.default_rng([self.seed, 1])
        U = self.U
        uid = np.arange(1, U + 1, dtype=np.int64)
        country_names = tuple(dict.fromkeys(c[1] for c in CITIES))
        country = np.array([country_names.index(c[1]) for c in CITIES])[self.city]
        ctype = np.where(self.weight > 8, 0, np.where(self.buyer, 1, np.where(
            self.signup > self.now_us - 14 * DAY_US, 2, 3)))
        signup = pa.array(self.signup, pa.timestamp("us"))
        return pa.table({
            "user_id": uid,
            "identity": pa.array([f"u{i}" for i in range(1, U + 1)]),
            "email": pa.array([f"user{i}@example.com" if i % 10 < 7 else None
                               for i in range(1, U + 1)]),
            "signup": signup,
            "city": _dict_array(CITY_NAMES, self.city),
            "country": _dict_array(country_names, country),
            "gender": _dict_array(GENDERS, rng.choice(3, U, p=[0.49, 0.48, 0.03])),
            "age": np.clip(np.round(rng.normal(34, 11, U)), 16, 90).astype(np.float64),
            "signup_date": signup,
            "platform": _dict_array(PLATFORMS, self.platform),
            "customer_type": _dict_array(CUSTOMER_TYPES, ctype),
            "msg_email": rng.random(U) < 0.8,
            "msg_push": rng.random(U) < 0.7,
        })

    def day(self, d: int) -> pa.Table:
        """Day ``d``'s events, in time order, with reference column names."""
        rng = np.random.default_rng([self.seed, 2, d])
        lo_us = self.start_us + d * DAY_US
        hi_us = lo_us + DAY_US
        alive = (self.signup < hi_us) & (self.churn > lo_us)
        cdf_all = _cdf(self.weight * alive)
        cdf_buy = _cdf(self.weight * (alive & self.buyer))
        names = list(EVENT_SHARES)
        counts = rng.multinomial(int(self.per_day[d]),
                                 _cdf_p(np.array(list(EVENT_SHARES.values()))))
        parts: list[tuple[str, np.ndarray, np.ndarray]] = []
        for name, n in zip(names, counts, strict=True):
            cdf = cdf_buy if name in BUYER_EVENTS else cdf_all
            u = np.minimum(np.searchsorted(cdf, rng.random(n), side="right"), self.U - 1)
            lo = np.maximum(lo_us, self.signup[u])
            hi = np.minimum(hi_us, self.churn[u])
            ts = lo + (rng.random(n) * (hi - lo)).astype(np.int64)
            parts.append((name, u + 1, ts))
        sel = (self.uninstall_ts >= lo_us) & (self.uninstall_ts < hi_us)
        parts.append(("App Uninstalled", self.uninstall_uid[sel], self.uninstall_ts[sel]))
        ev = np.concatenate([np.full(len(p[1]), i, np.int8) for i, p in enumerate(parts)])
        uid = np.concatenate([p[1] for p in parts]).astype(np.int64)
        ts = np.concatenate([p[2] for p in parts])
        order = np.argsort(ts, kind="stable")
        ev, uid, ts = ev[order], uid[order], ts[order]
        ts = _unique_increasing(ts, hi_us)
        n = len(ts)
        cols = self._props(rng, ev, uid, [p[0] for p in parts])
        seq = np.arange(self.seq + 1, self.seq + n + 1, dtype=np.int64)
        self.seq += n
        event_names = tuple(p[0] for p in parts)
        table = {"seq": seq, "user_id": uid, "event": _dict_array(event_names, ev),
                 "ts": pa.array(ts, pa.timestamp("us"))}
        table.update(cols)
        return pa.table(table)

    def _props(self, rng: np.random.Generator, ev: np.ndarray, uid: np.ndarray,
               names: list[str]) -> dict[str, pa.Array]:
        n = len(ev)
        code = {name: i for i, name in enumerate(names)}
        has = {col: np.zeros(n, bool) for _, col, _ in EVENT_PROPS}
        for name, cols in PROPS_OF.items():
            for col in cols:
                has[col] |= ev == code[name]
        prod = np.minimum((rng.pareto(1.1, n) * 40).astype(np.int64), len(PRODUCT_IDS) - 1)
        prod = rng.permutation(len(PRODUCT_IDS))[prod] if n else prod
        cat = prod // 150
        charged = ev == code["Charged"]
        cat = np.where(charged, rng.integers(0, len(CATEGORY_NAMES), n), cat)
        u = uid - 1
        amount = np.round(np.exp(np.log(80.0) + self.spend[u] + 1.1 * rng.standard_normal(n)), 2)
        price = np.round(np.exp(np.log(35.0) + 0.8 * rng.standard_normal(n)), 2)
        values = {
            "amount": amount, "category": (CATEGORY_NAMES, cat),
            "price": price, "product_id": (PRODUCT_IDS, prod),
            "quantity": (1 + rng.poisson(0.3, n)).astype(np.float64),
            "payment_method": (PAYMENT_METHODS, rng.integers(0, len(PAYMENT_METHODS), n)),
            "platform": (PLATFORMS, self.platform[u]),
            "app_version": (APP_VERSIONS, self.version[u]),
            "query": (QUERIES, rng.integers(0, len(QUERIES), n)),
            "campaign_id": (CAMPAIGNS, rng.integers(0, len(CAMPAIGNS), n)),
            "stars": rng.choice(5, n, p=[0.04, 0.05, 0.11, 0.30, 0.50]).astype(np.float64) + 1,
        }
        out: dict[str, pa.Array] = {}
        for _, col, _ in EVENT_PROPS:
            v = values[col]
            mask = ~has[col]
            if isinstance(v, tuple):
                idx = pa.array(v[1].astype(np.int32), mask=mask)
                out[col] = pa.DictionaryArray.from_arrays(idx, pa.array(v[0]))
            else:
                out[col] = pa.array(v, mask=mask)
        return out


def _cdf_p(w: np.ndarray) -> np.ndarray:
    w = np.asarray(w, dtype=float)
    return w / w.sum()


def _unique_increasing(ts: np.ndarray, hi: int) -> np.ndarray:
    """Sorted timestamps made strictly increasing (collisions are nudged by 1 µs)."""
    ts = ts.copy()
    while True:
        dup = np.flatnonzero(np.diff(ts) <= 0)
        if not len(dup):
            return ts
        ts[dup + 1] = ts[dup] + 1
        if ts[-1] >= hi:  # pathological; never at realistic densities
            raise ValueError("too many events for one day at microsecond resolution")


# -- writers --------------------------------------------------------------------------------
REF_EVENTS_DDL = ("CREATE TABLE events (seq BIGINT NOT NULL, user_id BIGINT NOT NULL, "
                  "event VARCHAR NOT NULL, ts TIMESTAMP NOT NULL, "
                  + ", ".join(f"{col} {SQL_TYPES[t]}" for _, col, t in EVENT_PROPS) + ")")
REF_PROFILES_DDL = ("CREATE TABLE profiles (user_id BIGINT NOT NULL, identity VARCHAR, "
                    "email VARCHAR, signup TIMESTAMP NOT NULL, "
                    + ", ".join(f"{col} {SQL_TYPES[t]}" for _, col, t in PROFILE_PROPS) + ")")


def build(directory: Path, users: int, events: int, *, seed: int = 7, now: float = NOW,
          days: int = 90, log=print) -> DatasetInfo:
    """Build (or reuse) ``reference.duckdb`` and ``nudge.duckdb`` in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    info = DatasetInfo(users, events, seed, now, days)
    stamp = directory / "dataset.json"
    if stamp.exists() and info.matches(DatasetInfo(**json.loads(stamp.read_text()))):
        log(f"# reusing data set in {directory}")
        return DatasetInfo(**json.loads(stamp.read_text()))
    stamp.unlink(missing_ok=True)
    for name in ("reference.duckdb", "nudge*.duckdb"):
        for p in directory.glob(name + "*"):
            p.unlink()
    started = time.perf_counter()
    build_reference(directory / "reference.duckdb", info, log)
    log(f"# reference data written in {time.perf_counter() - started:.0f} s")
    t = time.perf_counter()
    build_store(directory / "nudge.duckdb", directory / "reference.duckdb", log)
    log(f"# account store written in {time.perf_counter() - t:.0f} s")
    info.build_seconds = time.perf_counter() - started
    stamp.write_text(json.dumps(asdict(info)))
    return info


def _connect(path: Path) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(str(path))
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET enable_progress_bar = false")
    return con


def build_reference(path: Path, info: DatasetInfo, log=print) -> None:
    gen = _Generator(info.users, info.events, info.seed, info.now, info.days)
    con = _connect(path)
    con.execute("BEGIN TRANSACTION")
    con.execute(REF_EVENTS_DDL)
    con.execute(REF_PROFILES_DDL)
    profiles = gen.profiles()
    con.register("_p", profiles)
    con.execute("INSERT INTO profiles BY NAME SELECT * FROM _p")
    con.unregister("_p")
    for d in range(info.days):
        day = gen.day(d)
        con.register("_day", day)
        con.execute("INSERT INTO events BY NAME SELECT * FROM _day")
        con.unregister("_day")
        if d % 10 == 9:
            log(f"#   day {d + 1}/{info.days}: {gen.seq:,} events")
    con.execute("COMMIT")
    con.execute("CHECKPOINT")
    con.close()


def build_store(path: Path, reference: Path, log=print, run_rows: int | None = None) -> None:
    """The account store in the layout compaction produces: ``events_sorted`` ordered by
    (event, ts) as one run (a fully merged store), or, with ``run_rows``, as the runs that
    compacting every ``run_rows`` arrivals appends (each sorted by (event, ts))."""
    settings = load_settings({})
    store = AccountStore("bench", path, settings)  # creates the schema
    store.close()
    con = _connect(path)
    con.execute(f"ATTACH '{reference}' AS ref (READ_ONLY)")
    con.execute("BEGIN TRANSACTION")
    event_cols: list[tuple[str, str]] = []  # (reference column, store column)
    for i, (name, col, typ) in enumerate(EVENT_PROPS, 1):
        for table in ("events_recent", "events_sorted"):
            con.execute(f"ALTER TABLE {table} ADD COLUMN ep_{i} {SQL_TYPES[typ]}")
        con.execute("INSERT INTO property_catalog VALUES ('event', ?, ?, ?, now())",
                    [name, f"ep_{i}", typ])
        event_cols.append((col, f"ep_{i}"))
    profile_cols: list[tuple[str, str]] = []
    for i, (name, col, typ) in enumerate(PROFILE_PROPS, 1):
        con.execute(f"ALTER TABLE profiles ADD COLUMN pp_{i} {SQL_TYPES[typ]}")
        con.execute("INSERT INTO property_catalog VALUES ('profile', ?, ?, ?, now())",
                    [name, f"pp_{i}", typ])
        profile_cols.append((col, f"pp_{i}"))
    ev_select = ", ".join(f"{a} AS {b}" for a, b in event_cols)
    insert = ("INSERT INTO events_sorted BY NAME SELECT seq, 'bench-' || seq AS message_id, "
              f"user_id, event, ts, ts AS ingested_at, NULL AS props, {ev_select} "
              "FROM ref.events ")
    if run_rows is None:
        # One run: each event's rows in ts order; one pass per event name keeps the sort
        # small (the reference is in time order already).
        names = [r[0] for r in con.execute(
            "SELECT DISTINCT event FROM ref.events ORDER BY event").fetchall()]
        for name in names:
            con.execute(insert + "WHERE event = ? ORDER BY ts", [name])
            log(f"#   sorted rows of {name!r}")
    else:
        hi = con.execute("SELECT max(seq) FROM ref.events").fetchone()[0]
        for lo in range(1, hi + 1, run_rows):
            con.execute(insert + "WHERE seq >= ? AND seq < ? ORDER BY event, ts",
                        [lo, lo + run_rows])
        log(f"#   {-(-hi // run_rows)} runs of {run_rows:,} events")
    pp_select = ", ".join(f"p.{a} AS {b}" for a, b in profile_cols)
    con.execute(f"""
        INSERT INTO profiles BY NAME
        SELECT p.user_id, p.identity, p.email, NULL AS phone,
               least(p.signup, s.first) AS first_seen, s.last AS last_seen,
               coalesce(s.n, 0) AS event_count, s.first_seq AS first_event_seq,
               p.signup AS created_at, coalesce(s.last, p.signup) AS updated_at,
               NULL AS props, {pp_select}
        FROM ref.profiles p LEFT JOIN (
            SELECT user_id, min(ts) AS first, max(ts) AS last, count(*) AS n,
                   min(seq) AS first_seq
            FROM ref.events GROUP BY user_id) s USING (user_id)
        ORDER BY p.user_id""")
    con.execute("INSERT INTO identities SELECT 'identity', identity, user_id, created_at "
                "FROM profiles ORDER BY user_id")
    con.execute("INSERT INTO event_catalog SELECT event, count(*), min(ts), max(ts) "
                "FROM ref.events GROUP BY event")
    for event, cols in PROPS_OF.items():
        for col in cols:
            name, typ = next((n, t) for n, c, t in EVENT_PROPS if c == col)
            con.execute("INSERT INTO event_properties VALUES (?, ?, ?)", [event, name, typ])
    hi = con.execute("SELECT max(seq) FROM ref.events").fetchone()[0]
    con.execute("INSERT OR REPLACE INTO meta VALUES ('compacted_through', ?)", [str(hi)])
    record_runs(con, hi, run_rows or hi)
    con.execute("COMMIT")
    con.execute("DETACH ref")
    con.execute("CHECKPOINT")
    con.close()


def record_runs(con: duckdb.DuckDBPyConnection, hi: int, run_rows: int) -> None:
    """Register the runs (seq ranges of ``run_rows``) and their per-event statistics in
    ``event_runs``, as compaction does, so that the store's merge policy sees them."""
    con.execute("DELETE FROM event_runs")
    rows = con.execute(
        "SELECT (seq - 1) // ? AS r, event, count(*), epoch_us(min(ts)), epoch_us(max(ts)) "
        "FROM events_sorted GROUP BY ALL ORDER BY ALL", [run_rows]).fetchall()
    stats: dict[int, dict[str, list[int]]] = {}
    for r, event, n, lo, hi_ts in rows:
        stats.setdefault(int(r), {})[event] = [int(n), int(lo), int(hi_ts)]
    for r, st in sorted(stats.items()):
        con.execute("INSERT INTO event_runs VALUES (?, ?, ?, ?)",
                    [r * run_rows + 1, min((r + 1) * run_rows, hi),
                     sum(v[0] for v in st.values()), json.dumps(st)])


def runs_store(directory: Path, log=print) -> Path:
    """The same events as compaction leaves them before any merge: one sorted run per
    ``RUN_ROWS`` arrivals (built on first use)."""
    run_rows = RUN_ROWS
    path = directory / f"nudge-runs-{run_rows}.duckdb"
    if path.exists():
        _ensure_runs_recorded(path, run_rows, log)
    else:
        t = time.perf_counter()
        tmp = path.with_suffix(".tmp")
        for p in directory.glob(tmp.name + "*"):
            p.unlink()
        build_store(tmp, directory / "reference.duckdb", log, run_rows)
        tmp.rename(path)
        log(f"# account store with runs written in {time.perf_counter() - t:.0f} s")
    return path


def _ensure_runs_recorded(path: Path, run_rows: int, log=print) -> None:
    """Files built before ``event_runs`` existed: record their runs once."""
    AccountStore("bench", path, load_settings({}, merge_fanout=0)).close()  # adds the table
    con = _connect(path)
    try:
        n = con.execute("SELECT count(*) FROM event_runs").fetchone()[0]
        hi = int(con.execute("SELECT max(seq) FROM events_sorted").fetchone()[0])
        if n != -(-hi // run_rows):
            log(f"# recording the {-(-hi // run_rows)} runs of {path.name}")
            con.execute("BEGIN TRANSACTION")
            record_runs(con, hi, run_rows)
            con.execute("COMMIT")
    finally:
        con.close()


def store_merged(directory: Path, log=print) -> Path:
    """The runs store after the store's own background merge (``merge_runs_now`` with the
    default ``NUDGE_MERGE_*`` settings): a copy of ``runs_store``, merged on first use.
    An interrupted merge (the ``.tmp`` copy left by a killed run) resumes where it stopped,
    as the store itself resumes after a crash; the timing printed is then of this part."""
    runs = runs_store(directory, log)
    path = directory / runs.name.replace("nudge-runs-", "nudge-store-merged-")
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        if tmp.exists():
            log(f"# resuming the interrupted merge in {tmp.name}")
        else:
            for p in directory.glob(tmp.name + "*"):
                p.unlink()
            copying = path.with_suffix(".copying")  # a partial copy is never resumed
            shutil.copyfile(runs, copying)
            copying.rename(tmp)
        settings = load_settings({}, compact_threshold_rows=RUN_ROWS)  # the runs' tier base
        store = AccountStore("bench", tmp, settings)
        before = len(store.sorted_runs.runs)
        t, c = time.perf_counter(), time.process_time()
        steps = store.merge_runs_now()
        wall, cpu = time.perf_counter() - t, time.process_time() - c
        after = [r.rows for r in store.sorted_runs.runs]
        store.close()
        tmp.rename(path)
        log(f"# merged {before} runs into {len(after)} ({', '.join(f'{n:,}' for n in after)} "
            f"events) in {steps} steps: {wall:.0f} s wall, {cpu:.0f} s CPU (fanout "
            f"{settings.merge_fanout}, {settings.merge_step_rows:,} events per step)")
    return path


def tail_store(directory: Path, tail_rows: int, base: str = "merged", log=print) -> Path:
    """A live store between compactions: the ``base`` layout with its newest ``tail_rows``
    arrivals still in ``events_recent`` (in arrival order, as group commits append them)
    and ``compacted_through`` below them. A copy of the base store, built on first use."""
    src = _layout_path(directory, base)
    path = directory / f"{src.stem}-tail-{tail_rows}.duckdb"
    if path.exists():
        return path
    t = time.perf_counter()
    tmp = path.with_suffix(".tmp")
    for p in directory.glob(tmp.name + "*"):
        p.unlink()
    shutil.copyfile(src, tmp)
    con = _connect(tmp)
    hi = int(con.execute("SELECT max(seq) FROM events_sorted").fetchone()[0])
    cut = max(0, hi - tail_rows)
    con.execute("BEGIN TRANSACTION")
    con.execute("INSERT INTO events_recent SELECT * FROM events_sorted WHERE seq > ? "
                "ORDER BY seq", [cut])
    con.execute("DELETE FROM events_sorted WHERE seq > ?", [cut])
    con.execute("INSERT OR REPLACE INTO meta VALUES ('compacted_through', ?)", [str(cut)])
    # The runs now end at the cut (the last ones lose their newest rows).
    con.execute("DELETE FROM event_runs WHERE seq_lo > ?", [cut])
    con.execute("UPDATE event_runs SET seq_hi = ?, rows = ? - seq_lo + 1, stats = NULL "
                "WHERE seq_hi > ?", [cut, cut, cut])
    con.execute("COMMIT")
    con.execute("CHECKPOINT")
    con.close()
    tmp.rename(path)
    log(f"# {path.name}: the newest {hi - cut:,} events in events_recent "
        f"({time.perf_counter() - t:.0f} s)")
    return path


def _layout_path(directory: Path, layout: str) -> Path:
    if layout == "merged":
        return directory / "nudge.duckdb"
    if layout == "runs":
        return runs_store(directory)
    path = directory / f"nudge-store-merged-{RUN_ROWS}.duckdb"
    return path if path.exists() else store_merged(directory)


def open_store(directory: Path, layout: str = "merged", tail: int = 0,
               **settings: object) -> AccountStore:
    """Open the benchmark's account store (it loads the catalog written above). Background
    merging is off unless asked for, so that a layout stays what it is named; so is
    compaction, so that a ``tail`` (newest events left in ``events_recent``) stays there."""
    path = tail_store(directory, tail, layout) if tail else _layout_path(directory, layout)
    settings.setdefault("merge_fanout", 0)
    if tail:
        settings.setdefault("compact_threshold_rows", 1 << 62)
    return AccountStore("bench", path, load_settings({}, **settings))


def as_timestamp(epoch: float) -> str:
    """A SQL timestamp literal for epoch seconds (UTC)."""
    t = dt.datetime(1970, 1, 1) + dt.timedelta(seconds=epoch)
    return t.strftime("%Y-%m-%d %H:%M:%S.%f")
