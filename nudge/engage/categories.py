"""Subscription categories: the account's list of what a person can subscribe to per channel.

A campaign names one category (``category``, default :data:`DEFAULT` — marketing and
transactional campaigns alike, as ``parse_campaign`` defines); the policy skips a person
unsubscribed from (channel, category) with reason ``unsubscribed``; the preference page
lists the account's categories per channel. ``key`` is the stable name campaigns and
subscription rows use; ``name`` (renamable) and ``description`` are for people.

The default category always exists: it is created on first use and cannot be archived
(campaigns without a ``category`` use it). Archiving a category keeps it for the campaigns
and subscription rows that name it; new or edited campaigns must name an active one::

    d = CategoryDirectory(engine, "acct1")
    d.create({"name": "Product news", "description": "New features, monthly"})
    d.require("product-news", "category")   # raises UnknownCategory (422) if not usable
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from nudge.clock import clock
from nudge.errors import Conflict, NotFound, NudgeError, ValidationError
from nudge.store import control

T = control.subscription_categories
DEFAULT = "general"  # parse_campaign's default ``category``
DEFAULT_NAME = "General"
KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
FIELDS = ("key", "name", "description", "archived")


class UnknownCategory(NudgeError):
    """A campaign names a category the account does not have (or has archived)."""

    status = 422
    code = "unknown_category"


@dataclass(frozen=True)
class Category:
    key: str
    name: str
    description: str
    created_at: float
    updated_at: float
    archived_at: float | None

    @property
    def archived(self) -> bool:
        return self.archived_at is not None

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "name": self.name, "description": self.description,
                "default": self.key == DEFAULT, "archived": self.archived,
                "archived_at": self.archived_at, "created_at": self.created_at,
                "updated_at": self.updated_at}


def slug(name: str) -> str:
    """The key made from a name when none is given: ``"Product news!"`` → ``product-news``."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:64]


def _fields(body: Any, allowed: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ValidationError("body must be an object", field="body")
    for k in body:
        if k not in allowed:
            raise ValidationError(f"{k}: unknown field; allowed: {', '.join(allowed)}", field=k)
    out: dict[str, Any] = {}
    if "name" in body:
        n = body["name"]
        if not isinstance(n, str) or not n.strip() or len(n.strip()) > 200:
            raise ValidationError("name must be a non-empty string of at most 200 characters",
                                  field="name")
        out["name"] = n.strip()
    if "description" in body:
        d = body["description"]
        if not isinstance(d, str) or len(d) > 1000:
            raise ValidationError("description must be a string of at most 1000 characters",
                                  field="description")
        out["description"] = d.strip()
    if "archived" in body:
        if not isinstance(body["archived"], bool):
            raise ValidationError("archived must be true or false", field="archived")
        out["archived"] = body["archived"]
    return out


def _row(r: Any) -> Category:
    return Category(r.key, r.name, r.description, r.created_at, r.updated_at, r.archived_at)


class CategoryDirectory:
    """One account's subscription categories in the control store."""

    def __init__(self, engine: Engine, account_id: str) -> None:
        self.engine = engine
        self.account_id = account_id

    def _ensure_default(self, conn: sa.Connection) -> None:
        now = clock.now()
        control.insert_ignore(conn, T, [{
            "account_id": self.account_id, "key": DEFAULT, "name": DEFAULT_NAME,
            "description": "Messages that name no category", "created_at": now,
            "updated_at": now, "archived_at": None}], ("account_id", "key"))

    def list(self, archived: bool = False) -> list[Category]:
        """Active categories (the default first, then by name); ``archived`` adds the rest."""
        q = sa.select(T).where(T.c.account_id == self.account_id)
        if not archived:
            q = q.where(T.c.archived_at.is_(None))
        with self.engine.connect() as conn:
            rows = [_row(r) for r in conn.execute(q)]
        if not any(c.key == DEFAULT for c in rows):  # a write only the first time
            with self.engine.begin() as conn:
                self._ensure_default(conn)
                rows = [_row(r) for r in conn.execute(q)]
        return sorted(rows, key=lambda c: (c.key != DEFAULT, c.archived, c.name.lower()))

    def get(self, key: str) -> Category:
        q = sa.select(T).where(T.c.account_id == self.account_id, T.c.key == key)
        with self.engine.connect() as conn:
            r = conn.execute(q).first()
        if r is None and key == DEFAULT:
            with self.engine.begin() as conn:
                self._ensure_default(conn)
                r = conn.execute(q).first()
        if r is None:
            raise NotFound("no such subscription category in this account")
        return _row(r)

    def create(self, body: Any) -> Category:
        """``{"name", "key"?, "description"?}``; the key defaults to the name's slug."""
        f = _fields(body, ("key", "name", "description"))
        if "name" not in f:
            raise ValidationError("name is required", field="name")
        key = body.get("key", slug(f["name"]))
        if not isinstance(key, str) or not KEY.fullmatch(key):
            raise ValidationError("key must be 1-64 letters, digits, '_', '.' or '-', starting "
                                  "with a letter or digit", field="key")
        now = clock.now()
        with self.engine.begin() as conn:
            self._ensure_default(conn)
            added = control.insert_ignore(conn, T, [{
                "account_id": self.account_id, "key": key, "name": f["name"],
                "description": f.get("description", ""), "created_at": now,
                "updated_at": now, "archived_at": None}], ("account_id", "key"))
        if not added:
            raise Conflict(f"key: the category {key!r} exists already")
        return self.get(key)

    def update(self, key: str, body: Any) -> Category:
        """Rename, describe, archive or restore: ``{"name"?, "description"?, "archived"?}``."""
        f = _fields(body, ("name", "description", "archived"))
        old = self.get(key)
        values: dict[str, Any] = {k: f[k] for k in ("name", "description") if k in f}
        if "archived" in f and f["archived"] != old.archived:
            if key == DEFAULT and f["archived"]:
                raise ValidationError(f"archived: {DEFAULT!r} is the default category (campaigns "
                                      "without a category use it) and cannot be archived",
                                      field="archived")
            values["archived_at"] = clock.now() if f["archived"] else None
        if values:
            values["updated_at"] = clock.now()
            with self.engine.begin() as conn:
                conn.execute(T.update().where(T.c.account_id == self.account_id,
                                              T.c.key == key).values(**values))
        return self.get(key)

    def require(self, key: str, field: str = "category", unchanged_ok: str | None = None,
                allow_archived: bool = False) -> None:
        """Refuse (422, naming ``field``) a category the account does not have or has
        archived — except ``unchanged_ok``, the category an edited campaign had already
        (and archived ones with ``allow_archived``: one may always unsubscribe)."""
        if key == DEFAULT:
            return
        with self.engine.connect() as conn:
            r = conn.execute(sa.select(T.c.archived_at).where(
                T.c.account_id == self.account_id, T.c.key == key)).first()
        if r is not None and (r.archived_at is None or allow_archived or key == unchanged_ok):
            return
        known = ", ".join(c.key for c in self.list())
        why = "is archived" if r is not None else "is not one of the account's categories"
        raise UnknownCategory(f"{field}: {key!r} {why} (active: {known}; manage them in "
                              "Settings or /1/subscription-categories)", field=field)


# -- changes as the API and the dashboard make them: one audit entry per effective change ----

def create_audited(request: Any, d: CategoryDirectory, actor: str, body: Any) -> Category:
    """:meth:`CategoryDirectory.create` plus its audit entry (``subscription_category.created``)."""
    from nudge.tenancy import audit

    c = d.create(body)
    audit.record_request(request, account_id=d.account_id, actor=actor,
                         action="subscription_category.created",
                         target=f"subscription_category:{c.key}", detail={"name": c.name})
    return c


def update_audited(request: Any, d: CategoryDirectory, actor: str, key: str, body: Any,
                   ) -> Category:
    """:meth:`CategoryDirectory.update` plus an audit entry naming what changed, ``[old,
    new]`` (``subscription_category.archived`` when archived, else ``.updated``; none when
    nothing changed)."""
    from nudge.tenancy import audit

    old = d.get(key)
    c = d.update(key, body)
    changed = {k: [getattr(old, k), getattr(c, k)] for k in ("name", "description", "archived")
               if getattr(old, k) != getattr(c, k)}
    if changed:
        archived = changed.get("archived") == [False, True]
        audit.record_request(request, account_id=d.account_id, actor=actor,
                             action="subscription_category."
                                    + ("archived" if archived else "updated"),
                             target=f"subscription_category:{c.key}",
                             detail={"name": c.name} if archived and len(changed) == 1
                             else changed)
    return c


__all__ = ["DEFAULT", "Category", "CategoryDirectory", "UnknownCategory", "create_audited",
           "slug", "update_audited"]
