"""Reading a request body: size limit, gzip, strict JSON. Shared by every wire format."""

from __future__ import annotations

import gzip
import zlib
from typing import Any

import msgspec

from nudge.config import Limits
from nudge.errors import PayloadTooLarge, ValidationError
from nudge.ingest.validate import check_duplicate_keys

_DECODER = msgspec.json.Decoder()


def decode_body(raw: bytes, content_encoding: str | None, limits: Limits) -> Any:
    """Decompress (gzip/deflate) within the size limit and decode strict JSON.

    Strict means: valid UTF-8, no NaN/Infinity, no numbers out of range, no duplicate keys.
    """
    if len(raw) > limits.max_body_bytes:
        raise PayloadTooLarge(f"body is larger than {limits.max_body_bytes} bytes")
    enc = (content_encoding or "identity").strip().lower()
    if enc in ("gzip", "x-gzip", "deflate"):
        raw = _inflate(raw, enc, limits.max_body_bytes)
    elif enc != "identity":
        raise ValidationError(f"unsupported Content-Encoding {enc!r}", field="Content-Encoding")
    try:
        data = _DECODER.decode(raw)
    except UnicodeDecodeError:
        raise ValidationError("body is not valid UTF-8", field="body") from None
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise ValidationError(f"body is not valid JSON: {e}", field="body") from None
    check_duplicate_keys(raw, data)
    return data


def _inflate(raw: bytes, enc: str, limit: int) -> bytes:
    wbits = 16 + zlib.MAX_WBITS if enc != "deflate" else zlib.MAX_WBITS
    d = zlib.decompressobj(wbits)
    try:
        out = d.decompress(raw, limit + 1)
    except zlib.error:
        raise ValidationError("body is not valid " + enc, field="body") from None
    if len(out) > limit or d.unconsumed_tail:
        raise PayloadTooLarge(f"decompressed body is larger than {limit} bytes")
    return out


__all__ = ["decode_body", "gzip"]
