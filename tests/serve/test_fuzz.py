"""Schemathesis fuzzing from the app's own OpenAPI document: no 5xx, no hang.

The target is the FastAPI app with a real Host (its own Ray namespace and its
own SQLite store, so fuzzed agents never leak into other tests), served over
real HTTP by uvicorn in a background thread — the Host lives on that thread's
event loop. Positive and negative examples, ≤ 25 per operation; ``PUT
/v1/agents/{id}`` is fuzzed last, on its own, because it changes what later
events bind to.
"""
from __future__ import annotations

import socket
import threading
import time
import uuid
from typing import Iterator

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from actors.host_config import PoolConfig
from serve.config import ApiKey, HostSettings, ServerSettings, Settings, StorageSettings, hash_key
from store.migrate import upgrade

FUZZ_KEY = "rh-fuzz-" + uuid.uuid4().hex
AUTH = {"Authorization": f"Bearer {FUZZ_KEY}"}
AGENTS_PUT = "/v1/agents/{agent_id}"
FUZZ_SETTINGS = settings(max_examples=25, deadline=None, derandomize=True, database=None,
                         phases=[Phase.explicit, Phase.generate],
                         suppress_health_check=list(HealthCheck))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def fuzz_server(serve_ray, tmp_path_factory) -> Iterator[str]:
    import uvicorn

    from serve.app import create_app

    data = tmp_path_factory.mktemp("fuzz-data")
    port = _free_port()
    cfg = Settings(
        server=ServerSettings(host="127.0.0.1", port=port, max_body_bytes=32 * 1024),
        storage=StorageSettings(data_dir=str(data)),
        host=HostSettings(namespace=f"rh-fuzz-{uuid.uuid4().hex[:8]}"),
        pools=PoolConfig(run_actors_min=1, run_actors_max=8, workers_min=1, workers_max=1),
        api_keys=[ApiKey(name="fuzz", sha256=hash_key(FUZZ_KEY), scopes=["admin"])],
    ).resolved()
    upgrade(cfg.database_url)
    server = uvicorn.Server(uvicorn.Config(create_app(cfg), host="127.0.0.1", port=port, lifespan="on",
                                           log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, name="fuzz-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "fuzz server did not start"
        time.sleep(0.1)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=30)


@pytest.fixture(scope="session")
def fuzz_schema(fuzz_server: str):
    schema = schemathesis.openapi.from_url(f"{fuzz_server}/openapi.json")
    schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE], max_examples=25)
    return schema


def _operations() -> list[tuple[str, str]]:
    """(METHOD, path) of every documented operation, PUT /v1/agents/{id} last."""
    from serve.app import create_app
    spec = create_app(Settings()).openapi()
    ops = [(method.upper(), path) for path, item in spec["paths"].items() for method in item]
    return sorted(ops, key=lambda op: op == ("PUT", AGENTS_PUT))


OPERATIONS = _operations()


def _plausible_event(case):
    """Schema-valid bodies rarely pass the validators the schema cannot express; nudge half of them."""
    if isinstance(case.body, dict) and isinstance(case.body.get("event"), dict):
        case.body["agent_id"] = "echo"
        case.body["event"]["event_type"] = "message.received"
    return case


def _plausible_agent(case):
    if isinstance(case.body, dict):
        case.body["runner_id"] = "plugin:builtin/echo/default"
        case.body["event_types"] = ["message.received"]
        if isinstance(case.body.get("runner_config"), dict):
            case.body["runner_config"].pop("delay_s", None)
    return case


FIXUPS = {("POST", "/v1/events"): _plausible_event, ("PUT", AGENTS_PUT): _plausible_agent}


def _strategy(operation, method: str, path: str):
    positive = operation.as_strategy(GenerationMode.POSITIVE)
    strategies = [positive]
    if (method, path) in FIXUPS:
        strategies.append(positive.map(FIXUPS[method, path]))
    try:
        strategies.append(operation.as_strategy(GenerationMode.NEGATIVE))
    except Exception:  # nothing to negate (no parameters, no body)
        pass
    return st.one_of(strategies)


@pytest.mark.parametrize("method,path", OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_fuzz_operation(fuzz_schema, method: str, path: str):
    operation = fuzz_schema[path][method]

    @FUZZ_SETTINGS
    @given(case=_strategy(operation, method, path))
    def fuzz(case):
        response = case.call(headers=AUTH, timeout=20)
        case.validate_response(response, checks=[not_a_server_error])

    fuzz()


def test_fuzzed_host_still_serves(fuzz_server: str):
    with httpx.Client(base_url=fuzz_server, headers=AUTH, timeout=20) as c:
        assert c.get("/healthz").status_code == 200
        assert c.get("/v1/agents").status_code == 200
        assert c.get("/v1/runs", params={"limit": 5}).status_code == 200
