"""Predictive segments: ``/1/predict`` — live RFM, goals, training, scores, reports.

RFM is computed from live data on every call. Goals are trained in the background (progress
at ``GET /1/predict/goals/{id}/train``); their scores are read by segment conditions
(``intent_bucket``, ``intent_score``). docs/predict.md has the shapes.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response

from nudge.clock import clock
from nudge.errors import NotFound, ValidationError
from nudge.predict import rfm
from nudge.predict.conditions import SCORES_TABLE, scored_goals, user_scores
from nudge.predict.goals import Goal, GoalDirectory, _time
from nudge.predict.names import BUCKETS
from nudge.predict.runs import TrainingRuns
from nudge.predict.train import drop_scores, rescore
from nudge.query.profiles import find_user
from nudge.store.account import AccountStore

from ..context import passcode_account
from .ingest import read_body

router = APIRouter(prefix="/1/predict", tags=["predict"])


class _Ctx:
    def __init__(self, request: Request) -> None:
        nudge, self.account_id, self.store = passcode_account(request)
        engine = nudge.accounts.engine
        self.goals = GoalDirectory(engine, self.account_id)
        self.runs = TrainingRuns(engine, self.account_id)


async def _body(request: Request, *, optional: bool = False) -> dict[str, Any]:
    if optional and not (await request.body()).strip():
        return {}
    body = await read_body(request)
    if not isinstance(body, dict):
        raise ValidationError("body must be an object", field="body")
    return body


def _when(request: Request, key: str) -> float | None:
    v = request.query_params.get(key)
    if v is None:
        return None
    t = _time(float(v) if v.replace(".", "", 1).isdigit() else v, key)
    if t > clock.now():
        raise ValidationError(f"{key} must not be in the future", field=key)
    return t


# -- RFM ------------------------------------------------------------------------------------
@router.get("/rfm")
async def rfm_report(request: Request) -> Response:
    """Counts, revenue and scores per RFM segment now; ``?since=`` adds the movement."""
    ctx = _Ctx(request)
    since = _when(request, "since")

    def run() -> dict[str, Any]:
        return rfm.report(ctx.store, rfm.load_settings(ctx.store), clock.now(), since)

    return JSONResponse(await run_in_threadpool(run))


@router.get("/rfm/settings")
async def rfm_settings(request: Request) -> Response:
    ctx = _Ctx(request)
    return JSONResponse((await run_in_threadpool(rfm.load_settings, ctx.store)).to_dict())


@router.put("/rfm/settings")
async def rfm_set(request: Request) -> Response:
    """``{"event"?, "property"?, "lookback_days"?}``: the purchase event, its value, the
    lookback."""
    ctx = _Ctx(request)
    body = await _body(request)

    def run() -> rfm.RfmSettings:
        settings = rfm.check_settings(body, ctx.store.catalog, rfm.load_settings(ctx.store))
        return rfm.save_settings(ctx.store, settings)

    return JSONResponse((await run_in_threadpool(run)).to_dict())


@router.get("/rfm/user")
async def rfm_user(request: Request) -> Response:
    """One person's RFM values, scores and segment (``?identity=`` / email / phone)."""
    ctx = _Ctx(request)

    def run() -> dict[str, Any]:
        uid = find_user(ctx.store, dict(request.query_params))
        return rfm.for_user(ctx.store, rfm.load_settings(ctx.store), clock.now(), uid)

    return JSONResponse(await run_in_threadpool(run))


# -- goals ----------------------------------------------------------------------------------
def _goal_view(ctx: _Ctx, goal: Goal) -> dict[str, Any]:
    out = goal.to_dict()
    model = ctx.runs.latest_model(goal.id)
    out["model"] = None if model is None else {
        k: model[k] for k in ("id", "trained_at", "as_of")} | {
        "auc": model["metrics"].get("auc"),
        "top_decile_lift": model["metrics"].get("top_decile_lift")}
    out["last_run"] = ctx.runs.latest_run(goal.id)
    return out


@router.post("/goals", status_code=201)
async def create_goal(request: Request) -> Response:
    ctx = _Ctx(request)
    body = await _body(request)
    goal = await run_in_threadpool(ctx.goals.create, body)
    return JSONResponse(await run_in_threadpool(_goal_view, ctx, goal), status_code=201)


@router.get("/goals")
async def list_goals(request: Request) -> Response:
    ctx = _Ctx(request)

    def run() -> list[dict[str, Any]]:
        return [_goal_view(ctx, g) for g in ctx.goals.list()]

    return JSONResponse({"goals": await run_in_threadpool(run)})


@router.get("/goals/{goal_id}")
async def get_goal(goal_id: int, request: Request) -> Response:
    ctx = _Ctx(request)
    goal = await run_in_threadpool(ctx.goals.get, goal_id)
    return JSONResponse(await run_in_threadpool(_goal_view, ctx, goal))


@router.put("/goals/{goal_id}")
async def update_goal(goal_id: int, request: Request) -> Response:
    """Replace the definition. Scores stay until the next training."""
    ctx = _Ctx(request)
    body = await _body(request)
    goal = await run_in_threadpool(ctx.goals.update, goal_id, body)
    return JSONResponse(await run_in_threadpool(_goal_view, ctx, goal))


@router.delete("/goals/{goal_id}")
async def delete_goal(goal_id: int, request: Request) -> Response:
    """Delete a goal and its scores (segments using it then match no one)."""
    ctx = _Ctx(request)
    await run_in_threadpool(ctx.goals.delete, goal_id)
    await run_in_threadpool(drop_scores, ctx.store, goal_id)
    return JSONResponse({"deleted": goal_id})


@router.post("/goals/{goal_id}/train", status_code=202)
async def train(goal_id: int, request: Request) -> Response:
    """Start training in the background: 202 with the run; poll ``GET .../train``.
    ``{"as_of": date}`` trains and scores as if it were that moment (backtests)."""
    ctx = _Ctx(request)
    body = await _body(request, optional=True)
    for k in body:
        if k != "as_of":
            raise ValidationError(f"unknown field {k!r}; allowed: as_of", field=k)
    as_of = None
    if "as_of" in body:
        as_of = _time(body["as_of"], "as_of")
        if as_of > clock.now():
            raise ValidationError("as_of must not be in the future", field="as_of")
    goal = await run_in_threadpool(ctx.goals.get, goal_id)
    goal.horizon(as_of if as_of is not None else clock.now())  # a passed deadline: 400 now
    run_id = await run_in_threadpool(ctx.runs.start, ctx.store, goal, "api", as_of)
    return JSONResponse({"run": await run_in_threadpool(ctx.runs.get, run_id)},
                        status_code=202)


@router.get("/goals/{goal_id}/train")
async def training_status(goal_id: int, request: Request) -> Response:
    """The latest training run: status (running, done, failed, interrupted), stage,
    progress 0..1, error."""
    ctx = _Ctx(request)
    await run_in_threadpool(ctx.goals.get, goal_id)
    return JSONResponse({"run": await run_in_threadpool(ctx.runs.latest_run, goal_id)})


@router.post("/goals/{goal_id}/score")
async def score_again(goal_id: int, request: Request) -> Response:
    """Score everyone now with the stored model, without training."""
    ctx = _Ctx(request)
    goal = await run_in_threadpool(ctx.goals.get, goal_id)
    return JSONResponse({"buckets": await run_in_threadpool(rescore, ctx.store, goal)})


@router.get("/goals/{goal_id}/report")
async def report(goal_id: int, request: Request) -> Response:
    """The current model: training date, features, validation metrics (AUC, top-decile
    lift, calibration, observed rate per bucket), and people per bucket now."""
    ctx = _Ctx(request)
    goal = await run_in_threadpool(ctx.goals.get, goal_id)
    model = await run_in_threadpool(ctx.runs.latest_model, goal_id)
    if model is None:
        raise NotFound("this goal has no trained model yet; POST .../train first")
    buckets = await run_in_threadpool(_bucket_counts, ctx.store, goal_id)
    return JSONResponse({"goal": goal.to_dict(), "model": model, "buckets_now": buckets})


def _bucket_counts(store: AccountStore, goal_id: int) -> dict[str, int]:
    if goal_id not in scored_goals(store):
        return {b: 0 for b in BUCKETS}
    with store.cursor() as cur:
        rows = dict(cur.execute(f"SELECT bucket, count(*) FROM {SCORES_TABLE} "
                                "WHERE goal_id = ? GROUP BY bucket", [goal_id]).fetchall())
    return {b: int(rows.get(b, 0)) for b in BUCKETS}


@router.get("/goals/{goal_id}/scores")
async def scores(goal_id: int, request: Request) -> Response:
    """People's scores, highest first: ``?bucket=``, ``?limit=`` (≤1000), ``?offset=``;
    or one person's with ``?identity=`` (email / phone / objectId)."""
    ctx = _Ctx(request)
    await run_in_threadpool(ctx.goals.get, goal_id)
    q = dict(request.query_params)
    bucket = q.pop("bucket", None)
    if bucket is not None and bucket not in BUCKETS:
        raise ValidationError(f"bucket must be one of {list(BUCKETS)}", field="bucket")
    try:
        limit = int(q.pop("limit", "100"))
        offset = int(q.pop("offset", "0"))
    except ValueError:
        raise ValidationError("limit and offset must be integers", field="limit") from None
    if not 1 <= limit <= 1000 or offset < 0:
        raise ValidationError("limit must be 1-1000 and offset ≥ 0", field="limit")

    def run() -> dict[str, Any]:
        if q:
            uid = find_user(ctx.store, q)
            mine = [s for s in user_scores(ctx.store, uid) if s["goal"] == goal_id]
            if not mine:
                raise NotFound("this person has no score for this goal")
            return mine[0]
        if goal_id not in scored_goals(ctx.store):
            return {"scores": []}
        where, params = "s.goal_id = ?", list[Any]([goal_id])
        if bucket is not None:
            where += " AND s.bucket = ?"
            params.append(bucket)
        with ctx.store.cursor() as cur:
            rows = cur.execute(
                f"SELECT p.identity, p.email, s.user_id, s.score, s.bucket FROM {SCORES_TABLE} "
                f"s JOIN profiles p USING (user_id) WHERE {where} "
                "ORDER BY s.score DESC, s.user_id LIMIT ? OFFSET ?",
                params + [limit, offset]).fetchall()
        return {"scores": [{"identity": r[0], "email": r[1], "id": r[2], "score": r[3],
                            "bucket": r[4]} for r in rows]}

    return JSONResponse(await run_in_threadpool(run))


@router.get("/users")
async def user_predictions(request: Request) -> Response:
    """Everything predicted about one person: RFM and every goal's score and bucket."""
    ctx = _Ctx(request)

    def run() -> dict[str, Any]:
        uid = find_user(ctx.store, dict(request.query_params))
        return {"id": uid,
                "rfm": rfm.for_user(ctx.store, rfm.load_settings(ctx.store), clock.now(), uid),
                "goals": user_scores(ctx.store, uid)}

    return JSONResponse(await run_in_threadpool(run))
