"""The low-level protocol by hand, over plain HTTP: create_session, create_model, poll its
future with retrieve_future, get_info, then unload_model (and poll that too).

Env: TINKER_BASE_MODEL, TINKER_LORA_RANK (8).
"""

from __future__ import annotations

import time

import _common as c


def poll(request_id: str, label: str) -> dict:
    """retrieve_future until the result is there; the server long-polls, so few rounds."""
    for attempt in range(1, 61):
        status, body = c.http("POST", "retrieve_future", {"request_id": request_id})
        print(f"[tinker] poll #{attempt} {label} request_id={request_id} -> HTTP {status}")
        if status != 200:
            c.fail(f"{label} failed: HTTP {status} {body}")
        if body.get("type") == "try_again":
            time.sleep(0.2)
            continue
        if "error" in body:
            c.fail(f"{label} failed: {body['error']}")
        return body
    c.fail(f"{label}: no result after 60 polls")
    raise AssertionError


def main() -> None:
    base_url, _ = c.endpoint()
    print(f"[tinker] base_url={base_url}")
    status, body = c.http("POST", "create_session", {"tags": ["examples"], "sdk_version": "0.38.0"})
    if status != 200:
        c.fail(f"create_session failed: HTTP {status} {body}")
    session_id = body["session_id"]
    print(f"[tinker] created session_id={session_id}")

    rank = c.env_int("TINKER_LORA_RANK", 8)
    status, body = c.http(
        "POST",
        "create_model",
        {
            "session_id": session_id,
            "model_seq_id": 0,
            "base_model": c.base_model(),
            "lora_config": {"rank": rank},
        },
    )
    if status != 200:
        c.fail(f"create_model failed: HTTP {status} {body}")
    model_id = poll(body["request_id"], "create_model")["model_id"]
    print(f"[tinker] model_id={model_id}")

    status, info = c.http("POST", "get_info", {"model_id": model_id})
    if status != 200:
        c.fail(f"get_info failed: HTTP {status} {info}")
    data = info["model_data"]
    print(f"- model_name: {data.get('model_name')}")
    print(f"- arch: {data.get('arch')}")
    print(f"- tokenizer_id: {data.get('tokenizer_id')}")
    print(f"- is_lora: {info.get('is_lora')}")
    print(f"- lora_rank: {info.get('lora_rank')}")

    print("[tinker] unload_model")
    status, body = c.http("POST", "unload_model", {"model_id": model_id})
    if status != 200:
        c.fail(f"unload_model failed: HTTP {status} {body}")
    result = poll(body["request_id"], "unload_model") if "request_id" in body else body
    print(f"[tinker] unloaded: {result}")
    c.http("POST", "session_finish", {"session_id": session_id})


if __name__ == "__main__":
    main()
