"""Ingest endpoints: the native upload API and the Segment spec.

The hot path reads the raw body and decodes it with msgspec; FastAPI only routes.
A request is answered after its records are durable (group commit in the account store).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, Response

from nudge.errors import ValidationError
from nudge.ingest import reject_counts
from nudge.ingest.body import decode_body
from nudge.ingest.records import BatchResult, Record, RecordError
from nudge.ingest.segment_spec import CALL_TYPES, parse_batch, parse_call
from nudge.ingest.upload import parse_upload
from nudge.store import metrics
from nudge.store.account import AccountStore

from ..context import nudge_of, passcode_account, write_key_account

router = APIRouter()


async def read_body(request: Request) -> Any:
    """The decoded JSON body, refusing oversized bodies before reading them whole."""
    limits = nudge_of(request).settings.limits
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limits.max_body_bytes:
        from nudge.errors import PayloadTooLarge

        raise PayloadTooLarge(f"body is larger than {limits.max_body_bytes} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limits.max_body_bytes:
            from nudge.errors import PayloadTooLarge

            raise PayloadTooLarge(f"body is larger than {limits.max_body_bytes} bytes")
        chunks.append(chunk)
    return decode_body(b"".join(chunks), request.headers.get("content-encoding"), limits)


async def store_records(store: AccountStore, records: list[Record],
                        errors: list[RecordError]) -> BatchResult:
    result = BatchResult(errors=list(errors))
    if records:
        committed = await store.submit_logged(records)
        for err in committed.errors:
            if err is not None:
                result.errors.append(err)
        result.processed = len(records) - sum(e is not None for e in committed.errors)
        # Count only records the commit accepted; ones it rejected (e.g. 520) are rejects.
        # One increment per kind, not per record: a labelled counter takes a lock each time.
        accepted = Counter(rec.kind for rec, err in zip(records, committed.errors, strict=True)
                           if err is None)
        for kind, n in accepted.items():
            metrics.RECORDS.labels(kind=kind).inc(n)
    for err in result.errors:
        metrics.REJECTS.labels(code=str(err.code)).inc()
    reject_counts.note(store.settings, store.account_id, result.errors)  # per account (home)
    return result


@router.post("/1/upload", tags=["ingest"])
async def upload(request: Request) -> Response:
    """Native upload API (CleverTap ``/1/upload`` shape); per-record outcome."""
    nudge, account_id, store = passcode_account(request)
    with nudge.admit(account_id):
        data = await read_body(request)
        records, errors = parse_upload(data, nudge.settings.limits)
        result = await store_records(store, records, errors)
    metrics.REQUESTS.labels(endpoint="upload", status="200").inc()
    return JSONResponse(result.to_dict())


@router.post("/v1/batch", tags=["ingest"])
async def segment_batch(request: Request) -> Response:
    """Segment-spec batch: ``{"batch": [...], "sentAt"?, "context"?}``."""
    nudge = nudge_of(request)
    data = await read_body(request)
    body_key = data.get("writeKey") if isinstance(data, dict) else None
    nudge, account_id, store = write_key_account(request, body_key)
    with nudge.admit(account_id):
        records, errors = parse_batch(data, nudge.settings.limits)
        result = await store_records(store, records, errors)
    out = result.to_dict()
    metrics.REQUESTS.labels(endpoint="segment", status="200").inc()
    return JSONResponse({"success": not result.errors, **out})


def _single(call_type: str):  # type: ignore[no-untyped-def]
    async def endpoint(request: Request) -> Response:
        data = await read_body(request)
        body_key = data.get("writeKey") if isinstance(data, dict) else None
        nudge, account_id, store = write_key_account(request, body_key)
        with nudge.admit(account_id):
            record = parse_call(call_type, data, nudge.settings.limits)
            result = await store_records(store, [record], [])
        if result.errors:
            err = result.errors[0]
            raise ValidationError(err.error, field=str(err.code))
        return JSONResponse({"success": True})

    endpoint.__name__ = f"segment_{call_type}"
    endpoint.__doc__ = f"Segment-spec ``{call_type}`` call."
    return endpoint


for _call in CALL_TYPES:
    router.add_api_route(f"/v1/{_call}", _single(_call), methods=["POST"], tags=["ingest"])
