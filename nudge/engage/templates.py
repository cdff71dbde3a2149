"""Message templates in Liquid (python-liquid), sandboxed.

A template sees only the context we build, as plain dicts and lists:

- ``profile``: the person's properties plus ``identity``, ``email``, ``phone``, ``id``;
- ``event``: the triggering event (``name``, ``ts``, ``properties`` and each property at the
  top level) — empty for scheduled sends;
- ``campaign``: ``id``, ``name``, ``variant``;
- ``data``: per-call personalization given to ``POST /1/send``;
- ``unsubscribe_url`` and the ``track`` filter (``{{ "https://shop/x" | track }}``) for
  signed click-tracking links.

Sandboxing: Liquid resolves names only through mapping and sequence lookups, so no Python
attribute of any object is reachable (``{{ profile.__class__ }}`` is empty); there is no
loader, so ``include``/``render`` of files fail at save; loops, output size and nesting are
bounded. Templates are checked when saved: syntax errors come back with line and column,
and names outside the context above are refused (a typo like ``{{ profle.name }}`` would
otherwise render as empty for every recipient).

Rendering is memoized on the values a template actually reads (found by static analysis),
so a million recipients with a few thousand distinct first names cost a few thousand
renders; see docs/benchmarks.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from liquid import DictLoader, Environment
from liquid.exceptions import LiquidError, TemplateNotFoundError

from nudge.errors import ValidationError

ROOTS = frozenset({"profile", "event", "campaign", "data", "unsubscribe_url", "message"})
# Placeholders substituted at send time, when the outbox message id is known.
TRACK_PREFIX = "\x00nudge-track:"
UNSUBSCRIBE_PLACEHOLDER = "\x00nudge-unsubscribe\x00"
MEMO_MAX = 50_000


class TemplateError(ValidationError):
    status = 422
    code = "invalid_template"


def _track(url: object) -> str:
    """``{{ "https://x" | track }}``: the URL is recorded and replaced, at send time, by a
    signed redirect through our click endpoint (see tracking.py)."""
    return f"{TRACK_PREFIX}{url}\x00"


class _SandboxEnv(Environment):
    loop_iteration_limit = 10_000
    output_stream_limit = 256 * 1024
    context_depth_limit = 20
    local_namespace_limit = 64 * 1024
    block_nesting_limit = 30


def _env() -> Environment:
    # An empty DictLoader: {% include %} / {% render %} can reach nothing outside the store.
    env = _SandboxEnv(loader=DictLoader({}))
    env.filters["track"] = _track
    return env


ENV = _env()


def _position(source: str, index: int) -> tuple[int, int]:
    line = source.count("\n", 0, index) + 1
    col = index - (source.rfind("\n", 0, index) + 1) + 1
    return line, col


@dataclass
class Template:
    """A checked template and the context paths it reads."""

    source: str
    paths: tuple[tuple[str, ...], ...]
    uses_event: bool

    def __post_init__(self) -> None:
        self._compiled = ENV.from_string(self.source)
        self._memo: dict[tuple[Any, ...], str] = {}

    def render(self, context: Mapping[str, Any], memo: bool = True) -> str:
        key = tuple(template_key(context, p) for p in self.paths) if memo else None
        out = self._memo.get(key) if memo else None
        if out is None:
            try:
                out = self._compiled.render(**context)
            except LiquidError as e:
                raise TemplateError(f"template failed to render: {e.message}") from None
            if memo:
                if len(self._memo) >= MEMO_MAX:
                    self._memo.clear()
                self._memo[key] = out
        return out


_SCALARS = (str, int, float, bool, type(None))


def template_key(context: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    """The (hashable) value a template reads at ``path``; equal keys render equally."""
    v = _lookup(context, path)
    if type(v) is str:
        return v
    # Tagged with the type: True and 1 (or 1 and 1.0) are equal keys but render differently.
    return (type(v).__name__, v if type(v) in _SCALARS else _freeze(v))


def _freeze(v: Any) -> Any:
    if isinstance(v, dict):
        return tuple(sorted((k, _freeze(x)) for k, x in v.items()))
    if isinstance(v, list):
        return tuple(_freeze(x) for x in v)
    return v


_MISSING = object()


def _lookup(context: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    v: Any = context
    for seg in path:
        if isinstance(v, Mapping):
            v = v.get(seg, _MISSING)
        elif isinstance(v, list) and isinstance(seg, int) and -len(v) <= seg < len(v):
            v = v[seg]
        else:
            return _MISSING
        if v is _MISSING:
            return _MISSING
    return v


def compile_template(source: Any, field: str) -> Template:
    """Check and compile; raise TemplateError naming ``field`` and the position."""
    if not isinstance(source, str):
        raise TemplateError(f"{field} must be a string", field=field)
    if len(source) > 512 * 1024:
        raise TemplateError(f"{field} is longer than 512 KiB", field=field)
    try:
        compiled = ENV.from_string(source)
        analysis = compiled.analyze()
    except TemplateNotFoundError:
        raise TemplateError(f"{field}: include and render are not allowed (templates reach "
                            "nothing outside their context)", field=field) from None
    except LiquidError as e:
        token = getattr(e, "token", None)
        index = token.start_index if token is not None else 0
        line, col = _position(source, index)
        raise TemplateError(f"{field}: line {line}, column {col}: {e.message}",
                            field=field) from None
    if analysis.tags.get("include") or analysis.tags.get("render"):
        raise TemplateError(f"{field}: include and render are not allowed", field=field)
    for name, spans in analysis.filters.items():
        if name not in ENV.filters:
            line, col = _position(source, spans[0].index)
            raise TemplateError(f"{field}: line {line}, column {col}: unknown filter {name!r}",
                                field=field)
    paths: list[tuple[str | int, ...]] = []
    for name, uses in analysis.globals.items():
        if name not in ROOTS:
            line, col = _position(source, uses[0].span.index)
            raise TemplateError(
                f"{field}: line {line}, column {col}: unknown variable {name!r} "
                f"(available: {', '.join(sorted(ROOTS))})", field=field)
        for use in uses:
            segs = tuple(s if isinstance(s, str | int) else "" for s in use.segments)
            # A dynamic segment (profile[x]) makes the exact path unknown: key on its root.
            paths.append(segs if "" not in segs else (name,))
    # Loop variables and filters may read anything under a root: a bare root in the paths
    # keys the memo on the whole root value, which stays correct.
    return Template(source, tuple(sorted(set(paths), key=str)), "event" in analysis.globals)


def render_fields(templates: Mapping[str, Template], context: Mapping[str, Any]) -> dict[str, str]:
    return {name: t.render(context) for name, t in templates.items()}
