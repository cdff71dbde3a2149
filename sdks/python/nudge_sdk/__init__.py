"""Nudge server-side SDK: track events and update customer profiles.

Quick start::

    import nudge_sdk

    with nudge_sdk.Client("ACCOUNT_ID", "PASSCODE", host="http://localhost:8000") as nudge:
        nudge.track("u1", "Charged", {"Amount": 10})
        nudge.profile("u1", {"Name": "Ada", "Logins": nudge_sdk.incr(1)})
"""

from nudge_sdk._version import __version__
from nudge_sdk.client import MAX_BATCH_SIZE, MAX_BODY_BYTES, Client, ErrorCallback
from nudge_sdk.errors import RecordError
from nudge_sdk.ops import add, date, decr, incr, remove, set_once, set_value, unset

__all__ = [
    "MAX_BATCH_SIZE",
    "MAX_BODY_BYTES",
    "Client",
    "ErrorCallback",
    "RecordError",
    "__version__",
    "add",
    "date",
    "decr",
    "incr",
    "remove",
    "set_once",
    "set_value",
    "unset",
]
