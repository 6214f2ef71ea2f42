"""The aiohttp application: middlewares (auth, errors, size limits, stats, access log) and
handlers.

Which routes exist comes from the manifest (the single source of truth for endpoints); this
module supplies one handler per manifest route name, plus the signed-download route. Each JSON
body is decoded into the route's manifest request type (msgspec validates it and names the
bad field), and handlers pass those typed Structs to the service parts.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import re
import time
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from aiohttp import web

from tinker_actors import codec, manifest
from tinker_actors.errors import DecodeError, DecompressedTooLarge
from tinker_actors.server import wire
from tinker_actors.server.context import dumps
from tinker_actors.server.errors import HttpError, bad_request, gone
from tinker_actors.server.futures import CREATED
from tinker_actors.server.scheduler import QueueFull, SeqConflict
from tinker_actors.server.service import Service
from tinker_actors.server.stats import RequestStats
from tinker_actors.server.users import CALLER, caller
from tinker_actors.telemetry import get_logger

log = get_logger("tinker_actors.server")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SERVICE_KEY: web.AppKey[Service] = web.AppKey("service", Service)
STATS_KEY: web.AppKey[RequestStats] = web.AppKey("stats", RequestStats)
PUBLIC_PATHS = ("/api/v1/healthz", "/api/v1/_files/")
JSON = "application/json"
PROTO = "application/x-protobuf"


class TelemetryIngest(msgspec.Struct):
    """The one documented exception to the manifest's request types: telemetry is decoded
    leniently (events as plain objects), because the local server only counts events and
    must never reject telemetry from an SDK that knows newer event kinds."""

    events: list[dict[str, Any]]


# Each route's request body type: the manifest's, except where listed here (with why).
REQUEST_TYPES: dict[str, Any] = {
    **{r.name: r.request_type for r in manifest.ROUTE_LIST},
    "telemetry": TelemetryIngest,
}


def json_response(
    obj: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(body=dumps(obj), status=status, content_type=JSON, headers=headers)


def error_response(status: int, detail: str) -> web.Response:
    return json_response({"detail": detail}, status)


# -- body reading ---------------------------------------------------------------------------
async def read_body(request: web.Request) -> bytes:
    """The request body, decompressed (zstd/gzip/deflate) under the size limit."""
    limit = svc(request).config.max_body_bytes
    raw = await request.read()
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if not encoding or encoding == "identity":
        return raw
    try:
        if encoding == "zstd":
            out = codec.zstd_decompress(raw, max_output_size=limit)
        elif encoding == "gzip":
            out = gzip.GzipFile(fileobj=io.BytesIO(raw)).read(limit + 1)
        elif encoding == "deflate":
            out = zlib.decompressobj().decompress(raw, limit + 1)
        else:
            raise HttpError(415, f"unsupported Content-Encoding {encoding!r}")
    except DecompressedTooLarge as exc:
        raise HttpError(413, str(exc)) from exc
    except (DecodeError, OSError, zlib.error, EOFError) as exc:
        raise bad_request(f"could not decompress the {encoding} body: {exc}") from exc
    if len(out) > limit:
        raise HttpError(413, f"decompressed body is larger than {limit} bytes")
    return out


async def typed_body(request: web.Request, *, allow_empty: bool = False) -> tuple[Any, bytes]:
    """The body decoded into this route's request type, and the raw bytes (for digests).

    Malformed JSON is a 400; a body of the wrong shape (a missing or wrong-typed field, named
    in the message) is a 422.
    """
    raw = await read_body(request)
    type_ = REQUEST_TYPES[request.match_info.route.name or ""]
    if not raw.strip():
        if not allow_empty:
            raise HttpError(422, "a JSON object body is required")
        raw = b"{}"
    wire.check_json_depth(raw)
    try:
        return wire.decode_json(raw, type_), raw
    except DecodeError as exc:
        cause = exc.__cause__
        if isinstance(cause, msgspec.DecodeError) and not isinstance(
            cause, msgspec.ValidationError
        ):
            raise bad_request(f"malformed JSON body: {cause}") from exc
        raise HttpError(422, f"invalid request body: {cause or exc}") from exc


def digest(raw: bytes) -> str:
    return hashlib.blake2b(raw, digest_size=16).hexdigest()


def accepts_proto(request: web.Request) -> bool:
    return PROTO in request.headers.get("Accept", "")


def base_url(request: web.Request) -> str:
    """Where clients reach this server: configured, never the caller's Host header."""
    return svc(request).public_base_url


def query_int(
    request: web.Request, key: str, default: int, lo: int = 0, hi: int = 1_000_000
) -> int:
    raw = request.query.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise HttpError(422, f"query parameter {key!r} must be an integer") from exc
    if not lo <= value <= hi:
        raise HttpError(422, f"query parameter {key!r} must be between {lo} and {hi}")
    return value


# -- middlewares ----------------------------------------------------------------------------
def _user_of(service: Service, key: str) -> str | None:
    """The user of an API key or of a JWT this server issued; None when neither."""
    if not key:
        return None
    try:
        raw = key.encode("utf-8")  # bytes that are not UTF-8 arrive as lone surrogates
    except UnicodeEncodeError:
        return None
    user = service.keys.user_of(raw)
    if user is None and key.startswith("eyJ"):
        user = service.keys.jwt_user(key)
    return user


@web.middleware
async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    start = time.perf_counter()
    status = 500
    service = svc(request)
    try:
        route_missing = request.match_info.http_exception is not None
        if not route_missing and not request.path.startswith(PUBLIC_PATHS):
            key = request.headers.get("X-API-Key", "")
            user = _user_of(service, key)
            if user is None:
                status = 401
                detail = "missing X-API-Key header" if not key else "invalid API key"
                return error_response(401, detail)
            CALLER.set(user)  # this request's task: every part checks ownership against it
        created: list[str] = []
        CREATED.set(created)
        response = await handler(request)
        # A request id in this response must survive a crash (then it reads as failed, not
        # 410): wait for the batched commit of the futures this turn created.
        await service.registry.persist()
        if created and (lost := service.registry.unrecorded(created)):
            log.error("future_not_recorded", request_id=lost[0][0].request_id, error=lost[0][1])
            status = 500
            return error_response(500, f"the server could not record this request: {lost[0][1]}")
        status = response.status
        return response
    except HttpError as exc:
        status = exc.status
        return error_response(exc.status, exc.detail)
    except SeqConflict as exc:
        status = 409
        return error_response(409, str(exc))
    except QueueFull as exc:
        status = 429
        return error_response(429, str(exc))
    except web.HTTPException as exc:
        status = exc.status
        if exc.status in (301, 302, 303, 307, 308):
            raise
        response = error_response(exc.status, exc.reason)
        if exc.status == 405:  # which methods the path has (its most specific routes)
            response.headers["Allow"] = ",".join(allowed_methods(request.path))
        return response
    except (msgspec.ValidationError, msgspec.DecodeError, DecodeError) as exc:
        status = 422
        return error_response(422, f"invalid request body: {exc}")
    except (ValueError, TypeError) as exc:
        status = 400
        return error_response(400, f"invalid request: {exc}")
    except asyncio.CancelledError:
        status = 499
        raise
    except Exception as exc:
        log.exception("unhandled_error", method=request.method, path=request.path)
        return error_response(500, f"internal server error: {type(exc).__name__}: {exc}")
    finally:
        request.app[STATS_KEY].record(request.match_info.route.name, request.content_length, status)
        if service.access_log or status >= 500:
            log.info(
                "request",
                method=request.method,
                path=request.path,
                status=status,
                ms=round((time.perf_counter() - start) * 1000, 2),
            )


def svc(request: web.Request) -> Service:
    return request.app[SERVICE_KEY]


# -- handlers: client start-up, sessions, telemetry ------------------------------------------
async def client_config(request: web.Request) -> web.Response:
    await typed_body(request, allow_empty=True)
    return json_response(svc(request).client_config)


async def dynamic_config(request: web.Request) -> web.Response:
    await typed_body(request, allow_empty=True)
    return json_response({})


async def auth_token(request: web.Request) -> web.Response:
    await typed_body(request, allow_empty=True)
    return json_response({"jwt": svc(request).keys.issue_jwt(caller())})


async def apikey_me(request: web.Request) -> web.Response:
    if request.method == "DELETE":
        return json_response(None)
    user = caller()
    return json_response(
        {
            "key_id": 1,
            "name": user,
            "note": "tinker-actors local server key",
            "details": {
                "org_details": {"name": "local"},
                "user_details": {"email": f"{user}@localhost"},
            },
        }
    )


async def create_session(request: web.Request) -> web.Response:
    req, _ = await typed_body(request)
    return json_response(svc(request).sessions.create(req))


async def session_heartbeat(request: web.Request) -> web.Response:
    req, _ = await typed_body(request)
    return json_response(svc(request).sessions.heartbeat(req.session_id))


async def finish_session(request: web.Request) -> web.Response:
    req, _ = await typed_body(request, allow_empty=True)
    await svc(request).finish_session(request.match_info["session_id"], req)
    return json_response(None)


async def telemetry(request: web.Request) -> web.Response:
    req, _ = await typed_body(request)
    s = svc(request)
    s.telemetry_events += len(req.events)
    if s.telemetry_log is not None:  # tests read what SDKs send (issue 11)
        s.telemetry_log.append(msgspec.json.decode(await request.read()))
    return json_response({"status": "accepted"})


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def capabilities(request: web.Request) -> web.Response:
    return json_response(svc(request).capabilities())


# -- handlers: models and training -----------------------------------------------------------
async def create_model(request: web.Request) -> web.Response:
    req, raw = await typed_body(request)
    return json_response(svc(request).training.create_model(req, digest(raw)))


async def get_info(request: web.Request) -> web.Response:
    req, _ = await typed_body(request)
    return json_response(svc(request).training.get_info(req))


async def unload_model(request: web.Request) -> web.Response:
    req, _ = await typed_body(request)
    return json_response(svc(request).training.unload_model(req))


async def forward_backward(request: web.Request) -> web.Response:
    raw = await read_body(request)
    ctype = request.headers.get("Content-Type", "")
    if "json" in ctype or raw[:1] == b"{":
        parsed = wire.parse_fwdbwd_json(raw, "forward_backward_input")
    else:
        parsed = wire.parse_fwdbwd_proto(raw)
    return json_response(svc(request).training.forward_backward(parsed, digest(raw)))


async def forward_legacy(request: web.Request) -> web.Response:
    raw = await read_body(request)
    parsed = wire.parse_fwdbwd_json(raw, "forward_input")
    return json_response(svc(request).training.forward_backward(parsed, digest(raw)))


def _sequenced_handler(method: str) -> Handler:
    """optim_step, save_* and load_weights: a typed body and its digest (for retries)."""

    async def handler(request: web.Request) -> web.Response:
        req, raw = await typed_body(request)
        return json_response(getattr(svc(request).training, method)(req, digest(raw)))

    handler.__name__ = method
    return handler


async def create_custom_loss(request: web.Request) -> web.Response:
    req, _ = await typed_body(request)
    return json_response(svc(request).training.create_custom_loss(req))


# -- handlers: sampling ----------------------------------------------------------------------
async def create_sampling_session(request: web.Request) -> web.Response:
    req, _ = await typed_body(request)
    return json_response(await svc(request).sampling.create_session(req))


async def join_sampling_session(request: web.Request) -> web.Response:
    req, _ = await typed_body(request)
    return json_response(svc(request).sampling.join(req))


async def get_sampler(request: web.Request) -> web.Response:
    return json_response(svc(request).sampling.get(request.match_info["sampling_session_id"]))


async def asample(request: web.Request) -> web.Response:
    req, raw = await typed_body(request)
    sampling = svc(request).sampling
    sampler_id = req.sampling_session_id
    if not sampler_id:
        if not req.base_model and not req.model_path:
            raise HttpError(422, "sample needs sampling_session_id, base_model or model_path")
        sampler_id = await sampling.implicit_sampler(req.base_model, req.model_path)
    job, finish = wire.sample_job(req, deterministic=svc(request).config.deterministic_sampling)
    return json_response(sampling.asample(sampler_id, req.seq_id, digest(raw), job, finish))


async def retrieve_future(request: web.Request) -> web.Response:
    req, _ = await typed_body(request)
    s = svc(request)
    rec = s.registry.get(req.request_id)
    if rec is None or rec.owner != caller():  # someone else's future is an unknown one
        raise gone(f"future {req.request_id} is unknown or expired")
    if not rec.finished:
        done = await s.registry.wait(rec, s.config.long_poll_s)
        if not done:
            return json_response(
                {
                    "type": "try_again",
                    "request_id": req.request_id,
                    "queue_state": "active",
                    "queue_state_reason": s.queue_reason(rec),
                }
            )
    if rec.state == "failed":
        return json_response(
            {"error": rec.error or "request failed", "category": rec.category or "unknown"}
        )
    assert rec.outcome is not None
    payload, ctype = await wire.render_outcome(rec.outcome, accepts_proto(request))
    threshold = s.config.metadata_only_threshold_bytes
    if req.allow_metadata_only and len(payload) > threshold:
        return json_response({"status": "complete_metadata", "response_payload_size": len(payload)})
    return web.Response(body=payload, content_type=ctype)


async def retrieve_futures(request: web.Request) -> web.Response:
    req, _ = await typed_body(request)
    s = svc(request)
    return json_response(await s.sampling.retrieve_futures(req, s.config.long_poll_s))


async def cancel_future(request: web.Request) -> web.Response:
    req, _ = await typed_body(request)
    svc(request).cancel_future(req.request_id)
    return json_response(None)


# -- handlers: weights and REST --------------------------------------------------------------
async def copy_weights(request: web.Request) -> web.Response:
    req, _ = await typed_body(request)
    key = request.headers.get("X-Idempotency-Key")
    return json_response(svc(request).checkpoints.copy_weights(req, key))


async def weights_info(request: web.Request) -> web.Response:
    req, _ = await typed_body(request)
    return json_response(svc(request).checkpoints.weights_info(req))


def _paging(request: web.Request, default_limit: int) -> tuple[int, int]:
    return (
        query_int(request, "limit", default_limit, 0, 10_000) or default_limit,
        query_int(request, "offset", 0, 0, 10**9),
    )


async def list_training_runs(request: web.Request) -> web.Response:
    limit, offset = _paging(request, 20)
    return json_response(svc(request).checkpoints.list_training_runs(limit, offset))


async def get_training_run(request: web.Request) -> web.Response:
    return json_response(svc(request).checkpoints.training_run(request.match_info["run_id"]))


async def list_run_checkpoints(request: web.Request) -> web.Response:
    return json_response(svc(request).checkpoints.run_checkpoints(request.match_info["run_id"]))


def _ckpt_id(request: web.Request) -> tuple[str, str]:
    return request.match_info["run_id"], request.match_info["checkpoint_id"]


async def delete_checkpoint(request: web.Request) -> web.Response:
    svc(request).checkpoints.delete(*_ckpt_id(request))
    return json_response(None)


async def publish_checkpoint(request: web.Request) -> web.Response:
    svc(request).checkpoints.set_public(*_ckpt_id(request), request.method == "POST")
    return json_response(None)


async def checkpoint_ttl(request: web.Request) -> web.Response:
    req, _ = await typed_body(request)
    svc(request).checkpoints.set_ttl(*_ckpt_id(request), req)
    return json_response(None)


async def external_weights_urls(request: web.Request) -> web.Response:
    m = request.match_info
    urls = svc(request).checkpoints.external_urls(m["run_id"], m["name"], base_url(request))
    return json_response(urls)


async def checkpoint_archive(request: web.Request) -> web.Response:
    ckpts = svc(request).checkpoints
    url, expires = await ckpts.archive_url(*_ckpt_id(request), base_url(request))
    raise web.HTTPFound(url, headers={"Expires": expires})


async def signed_file(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(svc(request).checkpoints.verify(request.match_info["token"]))


async def list_user_checkpoints(request: web.Request) -> web.Response:
    limit, offset = _paging(request, 100)
    return json_response(svc(request).checkpoints.user_checkpoints(limit, offset))


async def list_sessions(request: web.Request) -> web.Response:
    limit, offset = _paging(request, 20)
    return json_response(svc(request).sessions.list_ids(limit, offset))


async def get_session(request: web.Request) -> web.Response:
    return json_response(svc(request).sessions.session_json(request.match_info["session_id"]))


async def session_project(request: web.Request) -> web.Response:
    req, _ = await typed_body(request)
    svc(request).sessions.assign_project(request.match_info["session_id"], req)
    return json_response(None)


async def trace_export(request: web.Request) -> web.Response:
    svc(request).sessions.get(request.match_info["session_id"])
    return json_response(
        {"status": "failed", "error": "trace export is not supported by the local server"}
    )


async def search_sessions(request: web.Request) -> web.Response:
    req, _ = await typed_body(request)
    return json_response(svc(request).sessions.search(req))


async def billing_usage(request: web.Request) -> web.Response:
    return json_response({"data": [], "sessions": {}, "cost_data_through": None})


async def storage_usage(request: web.Request) -> web.Response:
    return json_response(svc(request).checkpoints.storage_usage())


async def audit_log(request: web.Request) -> web.Response:
    return json_response({"entries": []})


async def local_stats(request: web.Request) -> web.Response:
    snapshot = request.app[STATS_KEY].snapshot()
    snapshot["models"] = svc(request).training.counters()
    return json_response(snapshot)


async def stream_sample(request: web.Request) -> web.StreamResponse:
    """Server-sent token events as the sample is decoded (server/streaming.py)."""
    from tinker_actors.server.streaming import stream_sample as handler

    return await handler(request)


async def not_implemented(request: web.Request) -> web.Response:
    raise HttpError(501, f"{request.method} {request.path} is not implemented by the local server")


# -- routing ---------------------------------------------------------------------------------
# One implementation per manifest route name; the manifest supplies method and path.
HANDLERS: dict[str, Handler] = {
    "client_config": client_config,
    "client_dynamic_config": dynamic_config,
    "auth_token": auth_token,
    "create_session": create_session,
    "session_heartbeat": session_heartbeat,
    "session_finish": finish_session,
    "telemetry": telemetry,
    "healthz": healthz,
    "get_server_capabilities": capabilities,
    "create_model": create_model,
    "get_info": get_info,
    "forward_backward": forward_backward,
    "optim_step": _sequenced_handler("optim_step"),
    "save_weights": _sequenced_handler("save_weights"),
    "save_weights_for_sampler": _sequenced_handler("save_weights_for_sampler"),
    "save_weights_external": _sequenced_handler("save_weights_external"),
    "load_weights": _sequenced_handler("load_weights"),
    "create_sampling_session": create_sampling_session,
    "join_sampling_session": join_sampling_session,
    "get_sampler": get_sampler,
    "asample": asample,
    "stream_sample": stream_sample,
    "retrieve_future": retrieve_future,
    "retrieve_futures": retrieve_futures,
    "cancel_future": cancel_future,
    "create_custom_loss": create_custom_loss,
    "copy_weights": copy_weights,
    "weights_info": weights_info,
    "list_training_runs": list_training_runs,
    "get_training_run": get_training_run,
    "list_checkpoints": list_run_checkpoints,
    "delete_checkpoint": delete_checkpoint,
    "publish_checkpoint": publish_checkpoint,
    "unpublish_checkpoint": publish_checkpoint,
    "set_checkpoint_ttl": checkpoint_ttl,
    "get_external_weights_urls": external_weights_urls,
    "list_user_checkpoints": list_user_checkpoints,
    "list_sessions": list_sessions,
    "get_session": get_session,
    "assign_session_project": session_project,
    "export_session_trace": trace_export,
    "search_sessions": search_sessions,
    "get_billing_usage": billing_usage,
    "get_current_checkpoint_storage_usage": storage_usage,
    "get_audit_log": audit_log,
    "get_api_key_me": apikey_me,
    "delete_api_key_me": apikey_me,
    # older SDKs (protocol.md section 11)
    "forward": forward_legacy,
    "unload_model": unload_model,
    "checkpoint_archive": checkpoint_archive,
}
# Not an API route: the signed downloads this server hands out (no API key; the URL is the
# credential).
FILES_PATH = "/api/v1/_files/{token}"
# Not an API route either: this server's request counts (ServerConfig.stats_route / serve
# --stats). Authenticated like the API; the _local prefix says no real service has it.
STATS_PATH = "/api/v1/_local/stats"
STATS_ROUTE = "local_stats"


_PARAM = re.compile(r"\{\w+\}")


def allowed_methods(path: str) -> list[str]:
    """The methods of the manifest routes that serve ``path`` (fixed segments win, as in
    ``manifest.find_route``): what a 405's ``Allow`` lists."""
    best: list[str] = []
    best_literal = -1
    for r in manifest.ROUTE_LIST:
        if r.match(r.method, path) is None:
            continue
        literal = len(_PARAM.sub("", r.path))
        if literal > best_literal:
            best, best_literal = [r.method], literal
        elif literal == best_literal:
            best.append(r.method)
    return sorted(set(best))


async def _shadowed(request: web.Request) -> web.Response:
    """A fixed path that a parameter route would also match (``GET /sessions/search``):
    the fixed route wins, so other methods are 405 rather than a lookup of id "search"."""
    raise web.HTTPMethodNotAllowed(request.method, allowed_methods(request.path))


def add_routes(app: web.Application, *, stats_route: bool = False) -> list[str]:
    """Registers every manifest route with its handler; returns manifest routes without one."""
    for literal in (r for r in manifest.ROUTE_LIST if not r.path_params):
        mine = set(allowed_methods(literal.path))
        for other in manifest.ROUTE_LIST:
            if other.path_params and other.method not in mine and other.match(
                other.method, literal.path
            ):
                app.router.add_route(other.method, literal.path, _shadowed)
                mine.add(other.method)
    missing = []
    for route in manifest.ROUTE_LIST:
        handler = HANDLERS.get(route.name)
        if handler is None:
            missing.append(route.name)
            handler = not_implemented
        app.router.add_route(route.method, route.aiohttp_path, handler, name=route.name)
    app.router.add_route("GET", FILES_PATH, signed_file, name="signed_file")
    if stats_route:
        app.router.add_route("GET", STATS_PATH, local_stats, name=STATS_ROUTE)
    return missing


def build_app(service: Service, *, access_log: bool = False) -> web.Application:
    app = web.Application(middlewares=[middleware], client_max_size=service.config.max_body_bytes)
    app[SERVICE_KEY] = service
    app[STATS_KEY] = RequestStats(exclude=(STATS_ROUTE,))
    service.access_log = access_log
    missing = add_routes(app, stats_route=service.config.stats_route)
    if missing:
        log.warning("manifest_routes_without_handler", routes=missing)
    return app
