"""Demo-shaped upload records for the benchmarks.

Uses ``nudge.demo.generate`` when it exists (the demo data of ``nudge demo``); otherwise an
equivalent generator here: an e-commerce app's events, 5-8 properties each, a unique msgId
per event, users with skewed activity, timestamps in arrival order over the last ``days``.
"""

from __future__ import annotations

import itertools
import math
import random
import time
from collections.abc import Iterator
from typing import Any

# event name -> (share of events, property generators)
_CITIES = ["Mumbai", "Delhi", "Bengaluru", "Hyderabad", "Chennai", "Kolkata", "Pune",
           "Ahmedabad", "Jaipur", "Lucknow", "Surat", "Kanpur", "Nagpur", "Indore", "Bhopal",
           "Patna", "Vadodara", "Ludhiana", "Agra", "Nashik"]
_CATEGORIES = ["Electronics", "Fashion", "Home", "Beauty", "Books", "Sports", "Toys",
               "Grocery", "Furniture", "Jewellery", "Footwear", "Appliances"]
_BRANDS = [f"Brand {c}" for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"] * 2
_PLATFORMS = ["Android", "iOS", "Web"]
_PAYMENT = ["UPI", "Credit Card", "Debit Card", "Net Banking", "COD", "Wallet"]
_NETWORK = ["wifi", "4g", "5g", "3g"]
_SOURCES = ["home", "search", "category", "push", "email", "deeplink"]
_QUERIES = ["shoes", "iphone", "saree", "headphones", "watch", "kurta", "laptop", "tv",
            "lipstick", "rice", "sofa", "jeans", "charger", "novel", "cricket bat"]


def _lognormal(rng: random.Random, median: float, sigma: float) -> float:
    return round(median * math.exp(rng.gauss(0, sigma)), 2)


def _app_launched(rng: random.Random) -> dict[str, Any]:
    return {"Platform": rng.choice(_PLATFORMS),
            "App Version": f"5.{rng.randint(0, 9)}.{rng.randint(0, 20)}",
            "OS Version": str(rng.randint(10, 17)), "Network": rng.choice(_NETWORK),
            "Session Source": rng.choice(_SOURCES)}


def _product_viewed(rng: random.Random) -> dict[str, Any]:
    return {"Product ID": f"P{rng.randint(1, 20_000):05d}", "Category": rng.choice(_CATEGORIES),
            "Brand": rng.choice(_BRANDS), "Price": _lognormal(rng, 799, 0.9),
            "Source": rng.choice(_SOURCES), "In Stock": rng.random() < 0.9,
            "City": rng.choice(_CITIES)}


def _searched(rng: random.Random) -> dict[str, Any]:
    return {"Query": rng.choice(_QUERIES), "Results": rng.randint(0, 500),
            "Category": rng.choice(_CATEGORIES), "Sort": rng.choice(["relevance", "price", "new"]),
            "Filter Used": rng.random() < 0.3}


def _added_to_cart(rng: random.Random) -> dict[str, Any]:
    return {"Product ID": f"P{rng.randint(1, 20_000):05d}", "Category": rng.choice(_CATEGORIES),
            "Brand": rng.choice(_BRANDS), "Price": _lognormal(rng, 799, 0.9),
            "Quantity": rng.randint(1, 4), "City": rng.choice(_CITIES)}


def _charged(rng: random.Random) -> dict[str, Any]:
    return {"Amount": _lognormal(rng, 350, 1.0), "Items": rng.randint(1, 6),
            "Payment Mode": rng.choice(_PAYMENT), "Currency": "INR",
            "Coupon Used": rng.random() < 0.25, "Category": rng.choice(_CATEGORIES),
            "City": rng.choice(_CITIES), "Delivery Days": rng.randint(1, 7)}


def _notification_clicked(rng: random.Random) -> dict[str, Any]:
    return {"Campaign ID": f"c{rng.randint(1, 300)}",
            "Channel": rng.choice(["push", "email", "sms"]),
            "Template": f"t{rng.randint(1, 40)}", "Variant": rng.choice(["A", "B"]),
            "Platform": rng.choice(_PLATFORMS)}


def _rated(rng: random.Random) -> dict[str, Any]:
    return {"Product ID": f"P{rng.randint(1, 20_000):05d}", "Rating": rng.randint(1, 5),
            "Category": rng.choice(_CATEGORIES), "Has Review": rng.random() < 0.2,
            "Verified Purchase": rng.random() < 0.8}


def _wishlisted(rng: random.Random) -> dict[str, Any]:
    return {"Product ID": f"P{rng.randint(1, 20_000):05d}", "Category": rng.choice(_CATEGORIES),
            "Brand": rng.choice(_BRANDS), "Price": _lognormal(rng, 999, 0.9),
            "Source": rng.choice(_SOURCES)}


EVENTS = [("App Launched", 0.25, _app_launched), ("Product Viewed", 0.30, _product_viewed),
          ("Searched", 0.12, _searched), ("Added To Cart", 0.10, _added_to_cart),
          ("Notification Clicked", 0.08, _notification_clicked), ("Charged", 0.06, _charged),
          ("Product Rated", 0.04, _rated), ("Wishlisted", 0.05, _wishlisted)]


def _own_generate(users: int, events: int, seed: int, now: float, days: int,
                  chunk_size: int) -> Iterator[list[dict[str, Any]]]:
    rng = random.Random(seed)
    names = [e[0] for e in EVENTS]
    cum = list(itertools.accumulate(e[1] for e in EVENTS))
    makers = [e[2] for e in EVENTS]
    start = now - days * 86400
    step = days * 86400 / max(events, 1)
    chunk: list[dict[str, Any]] = []
    for i in range(events):
        k = rng.choices(range(len(names)), cum_weights=cum)[0]
        user = int(users * rng.random() ** 2)  # skewed: a few heavy users, a long tail
        chunk.append({"type": "event", "identity": f"user-{user}",
                      "ts": int(start + i * step + rng.random() * 60),
                      "evtName": names[k], "evtData": makers[k](rng),
                      "msgId": f"{rng.getrandbits(128):032x}"})
        if len(chunk) >= chunk_size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def source() -> str:
    """Which generator ``events`` uses."""
    try:
        from nudge.demo import generate  # noqa: F401
    except ImportError:
        return "bench.data (nudge.demo not available)"
    return "nudge.demo.generate"


def generate(users: int, events: int, seed: int = 7, now: float | None = None, days: int = 90,
             chunk_size: int = 50_000) -> Iterator[list[dict[str, Any]]]:
    """Upload-format records, in chunks: ``nudge.demo.generate`` if present, else our own."""
    now = time.time() - 60 if now is None else now
    try:
        from nudge.demo import generate as demo_generate
    except ImportError:
        return _own_generate(users, events, seed, now, days, chunk_size)
    return demo_generate(users, events, seed=seed, now=now, days=days, chunk_size=chunk_size)


def event_records(events: int, users: int, seed: int = 7, now: float | None = None,
                  days: int = 90) -> list[dict[str, Any]]:
    """Exactly ``events`` event records (profile/token records of the demo are left out),
    each with a unique msgId."""
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    # The demo's event count is approximate; ask for a little more and cut.
    for chunk in generate(users, int(events * 1.1) + 1000, seed=seed, now=now, days=days):
        for r in chunk:
            if r.get("type") != "event":
                continue
            mid = r.get("msgId")
            if not mid or mid in seen:
                r = {**r, "msgId": f"b{len(out):015d}"}
            seen.add(r["msgId"])
            out.append(r)
            if len(out) >= events:
                return out
    return out
