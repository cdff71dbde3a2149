"""Turn analytics report answers (the JSON the API returns) into ECharts options and CSV rows.

The dashboard never computes a figure itself: every number here is read from the answer of
the same function the API route calls (nudge/query/analytics). ``option_for`` builds the
ECharts option the page hands to ``echarts.setOption``; ``table_for`` builds the rows shown
under the chart and exported as CSV, so the table, the CSV and the API answer agree.
"""

from __future__ import annotations

import csv
import io
from typing import Any
from urllib.parse import parse_qsl


async def form_of(request: Any) -> dict[str, str]:
    """An htmx form post (``application/x-www-form-urlencoded``) as a dict; parsed here, as
    python-multipart is not a dependency. A repeated name keeps its last value."""
    body = (await request.body()).decode("utf-8", "replace")
    return dict(parse_qsl(body, keep_blank_values=True))


KINDS = ("trends", "funnels", "retention", "flows", "dayparting", "rfm")


def _short(label: str) -> str:
    """``2026-03-01T00:00:00-05:00`` -> ``2026-03-01 00:00`` for axis labels."""
    return label[:16].replace("T", " ") if isinstance(label, str) else str(label)


def _pct(x: float | None) -> str:
    return "" if x is None else f"{100 * x:.2f}%"


def _dur(s: float | None) -> str:
    if s is None:
        return ""
    s = float(s)
    for unit, n in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= n:
            return f"{s / n:.1f}{unit}"
    return f"{s:.0f}s"


# --- tables: (header, rows) -------------------------------------------------------------

def table_for(kind: str, r: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    return {"trends": _trends_table, "funnels": _funnel_table, "retention": _retention_table,
            "flows": _flows_table, "dayparting": _dayparting_table, "rfm": _rfm_table}[kind](r)


def _trends_table(r: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    lines = _trend_lines(r)
    header = ["bucket"] + [name for name, _ in lines]
    rows = [[b] + [vals[i] for _, vals in lines] for i, b in enumerate(r["buckets"])]
    rows.append(["total"] + [total for total in _trend_totals(r)])
    return header, rows


def _trend_lines(r: dict[str, Any]) -> list[tuple[str, list[Any]]]:
    """One line per series (or per series × breakdown group), formulas, previous period."""
    out: list[tuple[str, list[Any]]] = []
    groups = (r.get("breakdown") or {}).get("groups")
    for s in r["series"] + r.get("formulas", []):
        name = s.get("name") or f"{s['key']}: {s.get('event', s.get('expression'))}"
        if groups:
            for g, gs in zip(groups, s["groups"], strict=True):
                label = "other" if g.get("other") else str(g.get("value"))
                out.append((f"{name} [{label}]", gs["values"]))
        else:
            out.append((name, s["values"]))
        if "previous" in s:
            out.append((f"{name} (previous)", s["previous"]["values"]))
    return out


def _trend_totals(r: dict[str, Any]) -> list[Any]:
    out: list[Any] = []
    groups = (r.get("breakdown") or {}).get("groups")
    for s in r["series"] + r.get("formulas", []):
        if groups:
            out.extend(gs["total"] for gs in s["groups"])
        else:
            out.append(s["total"])
        if "previous" in s:
            out.append(s["previous"]["total"])
    return out


def _funnel_table(r: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    header = ["step", "event", "users", "conversion", "from_previous", "dropped", "drop_off",
              "median_time_from_start_s", "p90_time_from_start_s"]
    rows = []
    for s in r["steps"]:
        t = s.get("time_from_start") or {}
        rows.append([s["step"], s["event"], s["users"], s["conversion"], s["from_previous"],
                     s["dropped"], s["drop_off"], t.get("median_s"), t.get("p90_s")])
    return header, rows


def _retention_table(r: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    n = r["periods"]
    header = ["cohort", "size"] + [f"period_{k}" for k in range(n + 1)] + \
        [f"percent_{k}" for k in range(n + 1)]
    rows = [[c["start"], c["size"], *c["retained"], *c["percent"]] for c in r["cohorts"]]
    t = r["total"]
    rows.append(["total", t["size"], *t["retained"], *t["percent"]])
    return header, rows


def _flows_table(r: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    header = ["path", "paths"]
    return header, [[" → ".join(s["events"]), s["paths"]] for s in r["sequences"]]


def _dayparting_table(r: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    header = ["day"] + [str(h) for h in r["hours"]] + ["total"]
    rows = [[d, *r["values"][i], r["day_totals"][i]] for i, d in enumerate(r["days"])]
    rows.append(["total", *r["hour_totals"], r["total"]])
    return header, rows


def _rfm_table(r: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    header = ["segment", "users", "revenue", "avg_recency_days", "avg_frequency", "avg_monetary"]
    rows = [[s["segment"], s["users"], s["revenue"], s["avg_recency_days"], s["avg_frequency"],
             s["avg_monetary"]] for s in r["segments"]]
    rows.append(["no_purchases", r["no_purchases"], None, None, None, None])
    return header, rows


def to_csv(header: list[str], rows: list[list[Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for row in rows:
        w.writerow(["" if v is None else v for v in row])
    return buf.getvalue()


# --- ECharts options --------------------------------------------------------------------

def option_for(kind: str, r: dict[str, Any], chart: str = "line") -> dict[str, Any]:
    if kind == "trends":
        return _trends_option(r, chart)
    return {"funnels": _funnel_option, "retention": _retention_option, "flows": _flows_option,
            "dayparting": _dayparting_option, "rfm": _rfm_option}[kind](r)


HEAT = ["#f3f6fb", "#1f5fbf"]
_BASE: dict[str, Any] = {"aria": {"enabled": True}, "animation": False}


def _trends_option(r: dict[str, Any], chart: str) -> dict[str, Any]:
    kind = "bar" if chart == "bar" else "line"
    series = [{"name": name, "type": kind, "data": vals, "showSymbol": False,
               **({"lineStyle": {"type": "dashed"}} if name.endswith("(previous)") else {})}
              for name, vals in _trend_lines(r)]
    return {**_BASE, "tooltip": {"trigger": "axis"}, "legend": {"bottom": 0, "type": "scroll"},
            "grid": {"left": 56, "right": 16, "top": 16, "bottom": 56},
            "xAxis": {"type": "category", "data": [_short(b) for b in r["buckets"]]},
            "yAxis": {"type": "value"}, "series": series}


def _funnel_option(r: dict[str, Any]) -> dict[str, Any]:
    steps = r["steps"]
    labels = [f"{s['step']}. {s['event']}" for s in steps]
    bars = [{"value": s["users"], "conversion": _pct(s["conversion"]),
             "median": _dur((s.get("time_from_start") or {}).get("median_s"))} for s in steps]
    return {**_BASE, "tooltip": {"trigger": "axis"},
            "grid": {"left": 56, "right": 16, "top": 32, "bottom": 48},
            "xAxis": {"type": "category", "data": labels},
            "yAxis": {"type": "value", "name": "users"},
            "series": [
                {"name": "converted", "type": "bar", "stack": "f", "data": bars,
                 "label": {"show": True, "position": "top",
                           "formatter": "{c}"}},
                {"name": "dropped", "type": "bar", "stack": "f",
                 "itemStyle": {"opacity": 0.25},
                 "data": [s["dropped"] for s in steps]}]}


def _retention_option(r: dict[str, Any]) -> dict[str, Any]:
    cohorts = r["cohorts"]
    n = r["periods"]
    data = [[k, i, c["percent"][k]] for i, c in enumerate(cohorts)
            for k in range(n + 1) if c["percent"][k] is not None]
    return {**_BASE, "tooltip": {"position": "top"},
            "grid": {"left": 140, "right": 16, "top": 16, "bottom": 72},
            "xAxis": {"type": "category", "data": [str(k) for k in range(n + 1)],
                      "name": r["interval"] + "s later", "nameLocation": "middle", "nameGap": 28},
            "yAxis": {"type": "category", "inverse": True,
                      "data": [f"{_short(c['start'])[:10]} ({c['size']})" for c in cohorts]},
            "visualMap": {"min": 0, "max": 100, "calculable": True, "orient": "horizontal",
                          "left": "center", "bottom": 0, "inRange": {"color": HEAT}},
            "series": [{"name": "retained %", "type": "heatmap", "data": data,
                        "label": {"show": True}}]}


def _flows_option(r: dict[str, Any]) -> dict[str, Any]:
    def name(n: dict[str, Any]) -> str:
        return f"{n['step']}: {'other' if n.get('other') else n['event']}"

    by_id = {n["id"]: name(n) for n in r["nodes"]}
    return {**_BASE, "tooltip": {"trigger": "item"},
            "series": [{"type": "sankey", "emphasis": {"focus": "adjacency"},
                        "nodeAlign": "left", "left": 8, "right": 120,
                        "data": [{"name": by_id[n["id"]], "value": n["paths"]} for n in r["nodes"]],
                        "links": [{"source": by_id[lk["source"]], "target": by_id[lk["target"]],
                                   "value": lk["value"]} for lk in r["links"]]}]}


def _dayparting_option(r: dict[str, Any]) -> dict[str, Any]:
    values = r["values"]
    top = max((v for row in values for v in row), default=0) or 1
    data = [[h, d, values[d][h]] for d in range(len(r["days"])) for h in range(len(r["hours"]))]
    return {**_BASE, "tooltip": {"position": "top"},
            "grid": {"left": 96, "right": 16, "top": 16, "bottom": 72},
            "xAxis": {"type": "category", "data": [str(h) for h in r["hours"]],
                      "name": "hour", "nameLocation": "middle", "nameGap": 28},
            "yAxis": {"type": "category", "data": r["days"], "inverse": True},
            "visualMap": {"min": 0, "max": top, "calculable": True, "orient": "horizontal",
                          "left": "center", "bottom": 0, "inRange": {"color": HEAT}},
            "series": [{"name": r.get("measure", "total"), "type": "heatmap", "data": data}]}


def _rfm_option(r: dict[str, Any]) -> dict[str, Any]:
    """The R x F grid: buyers per cell (R down from 5, F across from 1)."""
    top = max((c["users"] for c in r["grid"]), default=0) or 1
    return {**_BASE, "tooltip": {"position": "top"},
            "grid": {"left": 56, "right": 16, "top": 16, "bottom": 72},
            "xAxis": {"type": "category", "data": ["1", "2", "3", "4", "5"], "name": "F",
                      "nameLocation": "middle", "nameGap": 28},
            "yAxis": {"type": "category", "data": ["5", "4", "3", "2", "1"], "name": "R"},
            "visualMap": {"min": 0, "max": top, "calculable": True, "orient": "horizontal",
                          "left": "center", "bottom": 0, "inRange": {"color": HEAT}},
            "series": [{"name": "buyers", "type": "heatmap", "label": {"show": True},
                        "data": [[c["f"] - 1, 5 - c["r"], c["users"]] for c in r["grid"]]}]}
