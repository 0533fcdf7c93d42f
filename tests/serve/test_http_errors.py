"""The 401/4xx matrix over real HTTP: every bad key or bad input answers in the error model."""
from __future__ import annotations

import json

import httpx
import pytest

ERROR_KEYS = {"code", "message", "retryable", "details"}
EVENT = {"event_type": "message.received", "conversation_id": "c-errors", "input": {"text": "hi"}}
ECHO_AGENT = {"runner_id": "plugin:builtin/echo/default"}


def assert_error(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == ERROR_KEYS, body
    assert body["code"] == code, body
    assert "Traceback" not in response.text
    return body


@pytest.fixture
async def anon(serve_app):
    async with httpx.AsyncClient(base_url=serve_app.url, timeout=30) as c:
        yield c


AUTH_CASES = [
    # (method, path, json body, which key, expected status)
    ("POST", "/v1/events", {"agent_id": "echo", "event": EVENT}, None, 401),
    ("POST", "/v1/events", {"agent_id": "echo", "event": EVENT}, "wrong", 401),
    ("POST", "/v1/events", {"agent_id": "echo", "event": EVENT}, "basic", 401),
    ("POST", "/v1/events", {"agent_id": "echo", "event": EVENT}, "read", 401),
    ("POST", "/v1/events", {"agent_id": "echo", "event": EVENT}, "ingest", 200),
    ("GET", "/v1/runs", None, None, 401),
    ("GET", "/v1/runs", None, "ingest", 401),
    ("GET", "/v1/runs", None, "read", 200),
    ("GET", "/v1/agents", None, "read", 200),
    ("PUT", "/v1/agents/echo-x", ECHO_AGENT, "ingest", 401),
    ("PUT", "/v1/agents/echo-x", ECHO_AGENT, "read", 401),
    ("PUT", "/v1/agents/echo-x", ECHO_AGENT, "admin", 200),
    ("POST", "/v1/runs/run_unknown/cancel", None, "read", 401),
    ("POST", "/v1/runs/run_unknown/cancel", None, "ingest", 404),
    ("GET", "/v1/runs/run_unknown/stream", None, "read", 401),
    ("GET", "/v1/runs/run_unknown/stream", None, "ingest", 404),
    ("GET", "/healthz", None, None, 200),
    ("GET", "/openapi.json", None, None, 200),
    ("GET", "/docs", None, None, 200),
]


@pytest.mark.parametrize("method,path,body,key,status", AUTH_CASES)
async def test_auth_matrix(serve_app, anon, method, path, body, key, status):
    headers = {None: {}, "wrong": {"Authorization": "Bearer not-a-key"},
               "basic": {"Authorization": "Basic YWRtaW46YWRtaW4="},
               "admin": serve_app.admin, "ingest": serve_app.ingest, "read": serve_app.read}[key]
    r = await anon.request(method, path, json=body, headers=headers)
    if status == 401:
        body = assert_error(r, 401, "unauthorized")
        assert r.headers.get("www-authenticate") == "Bearer"
        for secret in serve_app.admin, serve_app.ingest, serve_app.read:
            assert secret["Authorization"].split()[1] not in r.text
    elif status == 404:
        assert_error(r, 404, "not_found")
    else:
        assert r.status_code == status, r.text


BAD_INPUTS = [
    # (method, path, raw body or json, params, status, code)
    ("POST", "/v1/events", b'{"agent_id": "echo", "event": {', None, 400, "invalid_argument"),
    ("POST", "/v1/events", b"[]", None, 400, "invalid_argument"),
    ("POST", "/v1/events", b"not json at all", None, 400, "invalid_argument"),
    ("POST", "/v1/events", {"agent_id": "echo", "event": {**EVENT, "colour": "red"}}, None, 400, "invalid_argument"),
    ("POST", "/v1/events", {"agent_id": "echo", "event": EVENT, "extra": 1}, None, 400, "invalid_argument"),
    ("POST", "/v1/events", {"agent_id": "echo", "event": {**EVENT, "event_type": "message.sent"}}, None, 400,
     "invalid_argument"),
    ("POST", "/v1/events", {"agent_id": "echo", "event": {**EVENT, "input": {"text": "x", "bogus": 1}}}, None,
     400, "invalid_argument"),
    ("POST", "/v1/events", {"agent_id": "echo"}, None, 400, "invalid_argument"),
    ("POST", "/v1/events", {"agent_id": "echo", "event": EVENT}, {"wait": "maybe"}, 400, "invalid_argument"),
    ("POST", "/v1/events", {"agent_id": "nobody", "event": EVENT}, None, 404, "not_found"),
    ("POST", "/v1/events", {"event": EVENT}, None, 404, "no_binding"),
    ("POST", "/v1/events", {"agent_id": "echo", "event": {**EVENT, "event_type": "group.member_joined"}}, None,
     404, "no_binding"),
    ("PUT", "/v1/agents/bad-runner", {"runner_id": "echo"}, None, 400, "invalid_argument"),
    ("PUT", "/v1/agents/unknown-runner", {"runner_id": "plugin:nobody/none/default"}, None, 400,
     "invalid_argument"),
    ("PUT", "/v1/agents/bad-field", {**ECHO_AGENT, "multitask_strategy": "fanout"}, None, 400, "invalid_argument"),
    ("PUT", "/v1/agents/extra-field", {**ECHO_AGENT, "prompt": "be nice"}, None, 400, "invalid_argument"),
    ("PUT", "/v1/agents/bad%20id", ECHO_AGENT, None, 400, "invalid_argument"),
    ("PUT", "/v1/agents/malformed", b"{", None, 400, "invalid_argument"),
    ("GET", "/v1/runs", None, {"cursor": "garbage"}, 400, "invalid_argument"),
    ("GET", "/v1/runs", None, {"status": "sleeping"}, 400, "invalid_argument"),
    ("GET", "/v1/runs", None, {"limit": "0"}, 400, "invalid_argument"),
    ("GET", "/v1/runs", None, {"limit": "1000"}, 400, "invalid_argument"),
    ("GET", "/v1/runs", None, {"limit": "ten"}, 400, "invalid_argument"),
    ("GET", "/v1/runs/run_nope", None, None, 404, "not_found"),
    ("GET", "/v1/runs/run_nope/events", None, None, 404, "not_found"),
    ("GET", "/v1/conversations/c1/transcript", None, {"before_cursor": "garbage"}, 400, "invalid_argument"),
    ("GET", "/v1/conversations/c1/transcript", None, {"direction": "sideways"}, 400, "invalid_argument"),
    ("GET", "/v1/conversations/c1/events", None, {"before_cursor": "%%%"}, 400, "invalid_argument"),
    ("GET", "/v1/agents/nobody", None, None, 404, "not_found"),
    ("GET", "/v1/nothing-here", None, None, 404, "not_found"),
    ("DELETE", "/v1/runs", None, None, 405, "invalid_argument"),
]


@pytest.mark.parametrize("method,path,body,params,status,code", BAD_INPUTS)
async def test_bad_inputs_are_4xx_in_the_error_model(client, method, path, body, params, status, code):
    kwargs = {"content": body, "headers": {"Content-Type": "application/json"}} if isinstance(body, bytes) \
        else {"json": body}
    r = await client.request(method, path, params=params, **kwargs)
    assert_error(r, status, code)


async def test_bad_cursor_on_run_events(client):
    async with client.stream("POST", "/v1/events", json={"agent_id": "echo", "event": EVENT}) as s:
        frames = [json.loads(line) async for line in s.aiter_lines() if line]
    r = await client.get(f"/v1/runs/{frames[0]['run_id']}/events", params={"cursor": "not-a-cursor"})
    assert_error(r, 400, "invalid_argument")


async def test_oversized_body_is_413(client, serve_app):
    cap = serve_app.settings.server.max_body_bytes
    big = {"agent_id": "echo", "event": {**EVENT, "input": {"text": "x" * (cap + 10)}}}
    body = assert_error(await client.post("/v1/events", json=big), 413, "payload_too_large")
    assert body["details"]["max_bytes"] == cap

    async def chunks():  # no Content-Length: the cap still holds
        payload = json.dumps(big).encode()
        for i in range(0, len(payload), 8192):
            yield payload[i:i + 8192]
    assert_error(await client.post("/v1/events", content=chunks(),
                                   headers={"Content-Type": "application/json"}), 413, "payload_too_large")
    # just under the cap still works
    ok = {"agent_id": "echo", "event": {**EVENT, "input": {"text": "y" * (cap // 2)}}}
    async with client.stream("POST", "/v1/events", json=ok) as s:
        assert s.status_code == 200
        lines = [line async for line in s.aiter_lines() if line]
    assert json.loads(lines[-1])["type"] == "run.completed"


def test_rate_limited_and_unavailable_answers_carry_retry_after():
    from serve.errors import error_body, error_response
    for status in (429, 503):
        response = error_response(status, error_body("rate_limited" if status == 429 else "runtime_error", "busy",
                                                     retryable=True))
        assert response.headers["Retry-After"] == "1"
    assert "Retry-After" not in error_response(409, error_body("conflict", "no")).headers


UNSTORABLE = {  # text a Postgres text/jsonb column cannot hold: refused at intake, never 200-then-fail
    "NUL in the text": {"input": {"text": "a\u0000b"}},
    "NUL in a content part": {"input": {"contents": [{"type": "text", "text": "\u0000"}]}},
    "NUL in the data": {"data": {"note": "x\u0000"}},
    "NUL in a data key": {"data": {"k\u0000": 1}},
    "NUL in the actor name": {"actor": {"actor_name": "eve\u0000"}},
    "lone surrogate in the text": {"input": {"text": "\ud800"}},
}


@pytest.mark.parametrize("case", list(UNSTORABLE))
async def test_unstorable_text_is_refused_at_intake(client, conv, case):
    event = {**EVENT, "conversation_id": conv, **UNSTORABLE[case]}
    body = json.dumps({"agent_id": "echo", "event": event}).encode()  # \uXXXX escapes, as a client sends
    r = await client.post("/v1/events", content=body, headers={"Content-Type": "application/json"})
    assert_error(r, 400, "invalid_argument")
    events = await client.get(f"/v1/conversations/{conv}/events")
    assert events.status_code == 200 and events.json()["items"] == []  # nothing was accepted


async def test_unstorable_cancel_reason_is_refused(client):
    r = await client.post("/v1/runs/run_unknown/cancel", json={"reason": "stop\u0000now"})
    assert_error(r, 400, "invalid_argument")
