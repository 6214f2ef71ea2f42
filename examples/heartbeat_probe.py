"""Probe the session heartbeat routes over plain HTTP: POST /api/v1/session_heartbeat answers
200 for a live session, the legacy /api/v1/heartbeat answers 404.

Exits 1 if either answer is not the expected one.
"""

from __future__ import annotations

import _common as c


def main() -> None:
    status, body = c.http("POST", "create_session", {"tags": ["examples"], "sdk_version": "0.38.0"})
    if status != 200:
        c.fail(f"create_session failed: HTTP {status} {body}")
    session_id = body["session_id"]
    print(f"Created session: {session_id}")

    status, _ = c.http("POST", "session_heartbeat", {"session_id": session_id})
    print(f"/api/v1/session_heartbeat => {status} ({'ok' if status == 200 else 'unexpected'})")
    legacy, _ = c.http("POST", "heartbeat", {"session_id": session_id})
    print(f"/api/v1/heartbeat => {legacy} ({'expected' if legacy == 404 else 'unexpected'})")
    if status != 200 or legacy != 404:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
