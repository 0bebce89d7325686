"""Schemathesis hooks of scripts/schemathesis: sign most generated webhook deliveries.

Without a valid Standard Webhooks signature every generated `POST /webhook` stops at
verification (a stale `webhook-timestamp` is a 400, a wrong signature a 401), so the event parser,
the field rules and the exactly-once write behind them would never see generated input. This hook
signs three deliveries in four the way a real sender does (current timestamp, HMAC-SHA256 over
`{id}.{timestamp}.{body}` with WEBHOOK_SECRET) and leaves the fourth as generated, so the
verification failures are still exercised. The body is serialized here and handed to the transport
as the bytes to send, so the bytes signed are the bytes sent.
"""

import base64
import hashlib
import hmac
import json
import os
import time
import zlib

import schemathesis
from schemathesis.core import NotSet

SECRET = base64.b64decode(os.environ["WEBHOOK_SECRET"].removeprefix("whsec_"))


@schemathesis.hook
def before_call(context, case, kwargs):
    if case.operation.method.upper() != "POST" or case.operation.path != "/webhook":
        return
    headers = case.headers if case.headers is not None else {}
    event_id = headers.get("webhook-id", headers.get("x-event-id"))
    if not isinstance(event_id, str) or zlib.crc32(event_id.encode("utf-8", "replace")) % 4 == 0:
        return
    if isinstance(case.body, NotSet):
        body = b""
    else:
        try:
            body = json.dumps(case.body, allow_nan=False).encode("utf-8")
        except (TypeError, ValueError):
            return
        kwargs["data"] = body
    timestamp = str(int(time.time()))
    message = f"{event_id.strip()}.{timestamp}.".encode("utf-8", "replace") + body
    signature = base64.b64encode(hmac.new(SECRET, message, hashlib.sha256).digest()).decode()
    headers["webhook-timestamp"] = timestamp
    headers["webhook-signature"] = f"v1,{signature}"
    case.headers = headers
