"""app.logs: formatting, hashing, redaction and the access-log middleware."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from app import logs
from app.http.middleware.access_log import AccessLogMiddleware


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    uvicorn_access = logging.getLogger("uvicorn.access")
    saved_access = (list(uvicorn_access.handlers), uvicorn_access.propagate, uvicorn_access.disabled)
    yield
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    uvicorn_access.handlers[:], uvicorn_access.propagate, uvicorn_access.disabled = saved_access


def test_hash_session_id_is_short_stable_and_not_the_id() -> None:
    h = logs.hash_session_id("abc/def+ghi==")
    assert h == logs.hash_session_id(b"abc/def+ghi==")
    assert h.startswith("sid:") and len(h) == 16
    assert int(h[4:], 16) >= 0
    assert "abc" not in h
    assert h != logs.hash_session_id("abc/def+ghi=")


def test_redact_metadata_recursive_and_case_insensitive() -> None:
    original = {
        "Password": "p",
        "user": {"accessToken": "t", "name": "n", "nested": [{"X-Api-Key": "k"}, {"ok": 1}]},
        "Authorization": "Bearer x",
        "apikey": "k",
        "api_key": "k",
        "client_secret": "s",
        "Set-Cookie": "c",
        "tools": ["a", "b"],
        "count": 3,
    }
    redacted = logs.redact_metadata(original)
    assert redacted == {
        "Password": "[REDACTED]",
        "user": {
            "accessToken": "[REDACTED]",
            "name": "n",
            "nested": [{"X-Api-Key": "[REDACTED]"}, {"ok": 1}],
        },
        "Authorization": "[REDACTED]",
        "apikey": "[REDACTED]",
        "api_key": "[REDACTED]",
        "client_secret": "[REDACTED]",
        "Set-Cookie": "[REDACTED]",
        "tools": ["a", "b"],
        "count": 3,
    }
    assert original["Password"] == "p"  # not mutated
    assert logs.redact_metadata("plain") == "plain"
    assert logs.redact_metadata({"token": {"deep": "x"}}) == {"token": "[REDACTED]"}


def test_redact_metadata_survives_deep_nesting() -> None:
    deep: dict[str, object] = {}
    node = deep
    for _ in range(200):
        child: dict[str, object] = {}
        node["a"] = child
        node = child
    logs.redact_metadata(deep)  # no RecursionError


def capture(fmt: str) -> tuple[io.StringIO, logging.Handler]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter() if fmt == "json" else logs.TextFormatter())
    return stream, handler


def test_json_formatter_fields_extras_hashing_and_redaction() -> None:
    stream, handler = capture("json")
    logger = logging.getLogger("test.json")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        logger.info(
            "session %s",
            "created",
            extra={"session_id": "RAW-ID-123", "api_token": "t", "meta": {"cookie": "c"}},
        )
        try:
            raise ValueError("bad")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["msg"] == "session created"
    assert first["level"] == "info" and first["logger"] == "test.json"
    assert first["ts"].endswith("Z") and "T" in first["ts"]
    assert first["session_id"] == logs.hash_session_id("RAW-ID-123")
    assert first["api_token"] == "[REDACTED]"
    assert first["meta"] == {"cookie": "[REDACTED]"}
    assert "RAW-ID-123" not in stream.getvalue()
    assert second["level"] == "error" and "ValueError: bad" in second["exc"]


def test_text_formatter() -> None:
    stream, handler = capture("text")
    logger = logging.getLogger("test.text")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    try:
        logger.warning("hello", extra={"tenant": "acme"})
    finally:
        logger.removeHandler(handler)
    line = stream.getvalue().strip()
    assert "WARNING" in line and "test.text: hello" in line and "tenant=acme" in line


@pytest.mark.usefixtures("restore_logging")
def test_configure_logging_formats(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure_logging("debug", "json")
    logging.getLogger("x").debug("dbg", extra={"k": 1})
    err = capsys.readouterr().err.strip().splitlines()
    assert json.loads(err[-1])["k"] == 1
    logs.configure_logging("INFO", "text")
    logging.getLogger("x").info("txt")
    assert "INFO" in capsys.readouterr().err
    logs.configure_logging("INFO", "auto")  # pytest's stderr is not a tty -> json
    logging.getLogger("x").info("auto")
    json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert logging.getLogger("uvicorn.access").disabled
    with pytest.raises(ValueError):
        logs.configure_logging("INFO", "xml")


# --- access-log middleware ---------------------------------------------------------------------------------


async def get_session(request: Request) -> JSONResponse:
    request.state.tenant = "acme"
    return JSONResponse({"request_id": request.state.request_id})


async def healthz(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok", headers={"X-Request-ID": "from-app"})


def make_app() -> Starlette:
    app = Starlette(routes=[Route("/v1/sessions/{session_id:path}", get_session), Route("/healthz", healthz)])
    app.add_middleware(AccessLogMiddleware)
    return app


@pytest.fixture
def access_log() -> Iterator[io.StringIO]:
    stream, handler = capture("json")
    logger = logging.getLogger(logs.ACCESS_LOGGER)
    saved = (logger.level, logger.propagate)
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield stream
    logger.removeHandler(handler)
    logger.setLevel(saved[0])
    logger.propagate = saved[1]


def client() -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=make_app()), base_url="http://test")


async def test_access_log_line_has_template_not_raw_id(access_log: io.StringIO) -> None:
    raw_id = "Zr4wXq%2Fsecret%2Bid"
    async with client() as c:
        response = await c.get(f"/v1/sessions/{raw_id}?cursor=abc")
    assert response.status_code == 200
    output = access_log.getvalue()
    assert "Zr4wXq" not in output and "secret" not in output and "cursor" not in output
    entry = json.loads(output.strip().splitlines()[-1])
    assert entry["msg"] == "request"
    assert entry["route"] == "/v1/sessions/{session_id:path}"
    assert entry["method"] == "GET" and entry["status"] == 200
    assert entry["tenant"] == "acme"
    assert isinstance(entry["duration_ms"], float) and entry["duration_ms"] >= 0
    assert entry["request_id"] == response.headers["x-request-id"] == response.json()["request_id"]
    assert len(entry["request_id"]) == 32


async def test_request_id_is_accepted_when_clean(access_log: io.StringIO) -> None:
    async with client() as c:
        response = await c.get("/v1/sessions/a", headers={"X-Request-ID": "gw-1234/abc"})
    assert response.headers["x-request-id"] == "gw-1234/abc"
    assert json.loads(access_log.getvalue().splitlines()[-1])["request_id"] == "gw-1234/abc"


@pytest.mark.parametrize("bad", ["x" * 129, "has space", "tab\there", "caf\u00e9", ""])
async def test_request_id_is_replaced_when_dirty(bad: str, access_log: io.StringIO) -> None:
    async with client() as c:
        response = await c.get("/v1/sessions/a", headers={"X-Request-ID": bad.encode("utf-8")})
    rid = response.headers["x-request-id"]
    assert rid != bad and len(rid) == 32
    assert json.loads(access_log.getvalue().splitlines()[-1])["request_id"] == rid


async def test_unmatched_and_probe_requests(access_log: io.StringIO) -> None:
    async with client() as c:
        assert (await c.get("/no/such/secret-path")).status_code == 404
        probe = await c.get("/healthz")
    lines = [json.loads(line) for line in access_log.getvalue().splitlines()]
    assert lines[0]["route"] == "unmatched" and lines[0]["status"] == 404 and lines[0]["tenant"] is None
    assert "secret-path" not in access_log.getvalue()
    assert lines[1]["level"] == "debug" and lines[1]["route"] == "/healthz"
    # exactly one X-Request-ID, ours
    assert probe.headers.get_list("x-request-id") == [lines[1]["request_id"]]


def last_access_line(text: str) -> dict[str, object]:
    lines = [json.loads(line) for line in text.strip().splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("logger") == logs.ACCESS_LOGGER][-1]


async def test_direct_access_lines_match_the_logging_path(
    restore_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """With logging as configure_logging leaves it, access lines skip the logging machinery (hot path);
    they must be the same JSON lines the logging path writes."""
    logs.configure_logging("INFO", "json")
    assert logs.direct_json_stream(logging.getLogger(logs.ACCESS_LOGGER)) is not None
    async with client() as c:
        await c.get("/v1/sessions/direct%2Fid")
    direct = last_access_line(capsys.readouterr().err)

    extra = logging.StreamHandler(io.StringIO())
    logging.getLogger().addHandler(extra)  # customised logging: the normal path is used
    try:
        assert logs.direct_json_stream(logging.getLogger(logs.ACCESS_LOGGER)) is None
        async with client() as c:
            await c.get("/v1/sessions/direct%2Fid")
    finally:
        logging.getLogger().removeHandler(extra)
    via_logging = last_access_line(capsys.readouterr().err)

    assert set(direct) == set(via_logging)
    for key in ("level", "logger", "msg", "route", "method", "status", "tenant"):
        assert direct[key] == via_logging[key], key
    assert "direct" not in json.dumps(direct)
