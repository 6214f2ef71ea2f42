"""Schemathesis hooks for the OpenAPI conformance test: a serializer for protobuf bodies.

The export describes ``forward_backward`` bodies as binary protobuf; schemathesis generates
bytes for them and, with this, sends those bytes as they are.
"""

from __future__ import annotations

from typing import Any

import schemathesis
from schemathesis.transport.serialization import serialize_binary


@schemathesis.serializer("application/x-protobuf")
def protobuf(ctx: Any, value: Any) -> dict[str, Any]:
    return {"data": serialize_binary(value)}
