"""Sampling a running server with py-spy and saying where its time goes.

``py-spy`` is not a dependency of Nudge: ``.venv/bin/pip install py-spy``. Samples are
recorded in py-spy's raw (collapsed stack) format; each sample is put in one category by the
innermost frame that a rule recognises, so the table adds up to the samples taken.
"""

from __future__ import annotations

import collections
import linecache
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>.*):(?P<line>\d+)\)$")


def available() -> str | None:
    """The py-spy executable, if installed."""
    exe = Path(sys.executable).with_name("py-spy")
    return str(exe) if exe.exists() else shutil.which("py-spy")


def record(pid: int, seconds: float, out: Path, *, rate: int = 100, gil: bool = False,
           svg: Path | None = None) -> Path:
    """Sample ``pid`` for ``seconds``; raw collapsed stacks in ``out`` (and a flame graph)."""
    exe = available()
    if exe is None:
        raise RuntimeError("py-spy is not installed (.venv/bin/pip install py-spy)")
    base = [exe, "record", "--pid", str(pid), "--rate", str(rate), "--threads",
            "--full-filenames"] + (["--gil"] if gil else [])
    subprocess.run([*base, "--duration", str(int(seconds)), "--format", "raw", "-o", str(out)],
                   check=True, capture_output=True)
    if svg is not None:
        subprocess.run([*base, "--duration", "5", "-o", str(svg)], check=True,
                       capture_output=True)
    return out


@dataclass(frozen=True)
class Frame:
    func: str
    file: str
    line: int

    @property
    def text(self) -> str:
        return linecache.getline(self.file, self.line).strip() if self.file else ""


def _parse(frame: str) -> Frame:
    m = _FRAME.match(frame)
    if not m:
        return Frame(frame, "", 0)
    return Frame(m["func"], m["file"], int(m["line"]))


def _in(*parts: str) -> Callable[[Frame], bool]:
    return lambda f: any(p in f.file for p in parts)


def _sql(*words: str) -> Callable[[Frame], bool]:
    return lambda f: "/nudge/" in f.file and any(w in f.text for w in words)


# (category, rule) in priority order; the innermost frame matching any rule decides.
RULES: list[tuple[str, Callable[[Frame], bool]]] = [
    ("body: duplicate-key check", lambda f: "check_duplicate_keys" in f.func
     or "_count_keys" in f.func),
    ("body: JSON decode (msgspec)", lambda f: f.func == "decode_body"),
    ("validation (parse_upload)", _in("/nudge/ingest/upload.py", "/nudge/ingest/validate.py",
                                      "/nudge/ingest/segment_spec.py")),
    ("DuckDB: INSERT events", _sql("INSERT INTO events_recent")),
    ("DuckDB: COMMIT (WAL write)", _sql('execute("COMMIT")')),
    ("DuckDB: identity lookup", lambda f: f.func.endswith("lookup_identities")),
    ("DuckDB: profiles, identities, catalog", _sql(".execute(", ".executemany(", ".register(")),
    ("Arrow build (events, profiles)", lambda f: f.func.split(".")[-1].split("<")[0] in (
        "_events_table", "_profiles_table", "column_array", "place", "value_type",
        "to_column_value", "to_json") or "pyarrow" in f.file),
    ("identity resolution + dedup", lambda f: "/nudge/ingest/identity.py" in f.file
     or f.func.endswith("plan_records")),
    ("profile rows", _in("/nudge/ingest/profiles.py")),
    ("commit bookkeeping (Python)", _in("/nudge/store/")),
    ("response + metrics", lambda f: "prometheus_client" in f.file or "responses.py" in f.file
     or f.func.endswith("to_dict") or f.func.endswith("store_records")),
    ("HTTP body read", lambda f: f.func.endswith("read_body")),
    ("HTTP: uvicorn/starlette/fastapi/asyncio", _in("/uvicorn/", "/starlette/", "/fastapi/",
                                                    "/asyncio/", "httptools", "uvloop")),
]


@dataclass
class Profile:
    samples: int
    seconds: float
    rate: int
    by_category: dict[str, int]
    by_thread: dict[str, int]

    def share(self, n: int) -> float:
        return n / self.samples if self.samples else 0.0

    def cores(self, n: int) -> float:
        """Average number of busy threads (1.0 = one core all the time)."""
        return n / (self.seconds * self.rate)


def analyse(raw: Path, seconds: float, rate: int) -> Profile:
    cats: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        thread = frames[0]
        if thread.startswith("thread ("):
            name = thread.split(": ", 1)[-1] if ": " in thread else "other"
            threads["writer" if name.startswith("writer-") else
                    "event loop" if name == "MainThread" else "other threads"] += n
            frames = frames[1:]
        category = "other"
        for fr in reversed(frames):
            f = _parse(fr)
            hit = next((c for c, rule in RULES if rule(f)), None)
            if hit is not None:
                category = hit
                break
        cats[category] += n
    return Profile(total, seconds, rate, dict(cats.most_common()), dict(threads.most_common()))
