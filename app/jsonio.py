"""JSON in and out, exact for every integer a client can send.

orjson is the fast path everywhere, but it handles integers only up to 64 bits: it reads a longer one as
the nearest float (another number than the one sent) and refuses to write one. Clients' JSON (metadata, a
reply's `result`) is any JSON, and PostgreSQL's `jsonb` keeps such numbers exactly, so the broker does too:
a text with a run of 20 digits (the widest 64-bit integers have 19 or 20) is read again by the standard
library, which keeps integers exact, and a value orjson cannot write is written by the standard library.
Both are rare; the common case costs one regular-expression scan.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

import orjson

_LONG_DIGIT_RUN = re.compile(r"\d{20}")
_LONG_DIGIT_RUN_BYTES = re.compile(rb"\d{20}")

OPT_UTC_Z = orjson.OPT_UTC_Z
OPT_SORT_KEYS = orjson.OPT_SORT_KEYS


def loads(text: bytes | str) -> Any:
    """Parse strictly (orjson's rules: no NaN, no lone surrogates), integers exact."""
    value = orjson.loads(text)
    pattern = _LONG_DIGIT_RUN_BYTES if isinstance(text, bytes) else _LONG_DIGIT_RUN
    if pattern.search(text):  # type: ignore[arg-type]
        return json.loads(text)
    return value


def dumps(value: Any, option: int = 0) -> bytes:
    """orjson's bytes; the standard library's, in the same compact form, for integers past 64 bits."""
    try:
        return orjson.dumps(value, option=option)
    except orjson.JSONEncodeError as error:
        if "64-bit" not in str(error):
            raise
    return json.dumps(
        value,
        ensure_ascii=False,
        separators=(",", ":"),
        sort_keys=bool(option & OPT_SORT_KEYS),
        default=lambda item: _datetime(item, utc_z=bool(option & OPT_UTC_Z)),
    ).encode()


def _datetime(item: Any, *, utc_z: bool) -> str:
    """Datetimes as orjson writes them (RFC 3339; `Z` for UTC with OPT_UTC_Z)."""
    if not isinstance(item, datetime):
        raise TypeError(f"{type(item).__name__} is not JSON serializable")
    text = item.isoformat()
    return text[:-6] + "Z" if utc_z and text.endswith("+00:00") else text
