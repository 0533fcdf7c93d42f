"""Fixtures for actor-layer tests: one local Ray per session, one Host on a throwaway Postgres."""
from __future__ import annotations

import uuid

import pytest

from actors.host import Host
from actors.host_config import HostConfig, PoolConfig, StorageConfig
from protocol.agents import AgentConfig, MultitaskStrategy, ResourcePolicy

ECHO = "plugin:builtin/echo/default"


def echo_agent(strategy: MultitaskStrategy = MultitaskStrategy.PARALLEL, **config) -> AgentConfig:
    return AgentConfig(runner_id=ECHO, runner_config=config, multitask_strategy=strategy,
                       resource_policy=ResourcePolicy(run_ledger=["get", "events_page"]))


AGENTS = {
    "echo": echo_agent(),
    "echo-pooled": echo_agent().model_copy(update={"execution": "pool"}),
    "slow": echo_agent(delay_s=0.3, chunks=10),
    "steer": echo_agent(MultitaskStrategy.STEER, delay_s=0.4, chunks=6, steering=True),
    "enqueue": echo_agent(MultitaskStrategy.ENQUEUE, delay_s=0.2, chunks=3),
    "reject": echo_agent(MultitaskStrategy.REJECT, delay_s=0.5, chunks=4),
    "interrupt": echo_agent(MultitaskStrategy.INTERRUPT, delay_s=0.5, chunks=10),
    "rollback": echo_agent(MultitaskStrategy.ROLLBACK, delay_s=0.5, chunks=10, state_key="turns"),
    "counter": echo_agent(state_key="turns"),
}


PROBE = "plugin:test/probe/default"
PROBE = "plugin:test/probe/default"


def probe_agent(strategy: MultitaskStrategy = MultitaskStrategy.PARALLEL, policy: ResourcePolicy | None = None,
                runner: str = PROBE, timeout_s: float = 300.0, **config) -> AgentConfig:
    return AgentConfig(runner_id=runner, runner_config=config, multitask_strategy=strategy,
                       resource_policy=policy or ResourcePolicy(), timeout_s=timeout_s)


@pytest.fixture(scope="session")
def fake_openai():
    """A real OpenAI-compatible HTTP server (scripted) that the host's provider actor calls."""
    from tests.fakes.openai_server import FakeOpenAI
    with FakeOpenAI() as fake:
        yield fake


SDK_RUNNERS = {
    "plugin:sdk/probe/history": "tests.actors.sdk_probe:SdkHistoryRunner",
    "plugin:sdk/probe/model": "tests.actors.sdk_probe:SdkModelRunner",
}


@pytest.fixture(scope="session")
async def host(ray_session, pg_url, tmp_path_factory, fake_openai) -> Host:
    from tests.actors.probe_runners import PROBE_RUNNERS
    config = HostConfig(
        namespace=f"rh-actors-{uuid.uuid4().hex[:8]}",
        storage=StorageConfig(database_url=pg_url, artifact_root=str(tmp_path_factory.mktemp("artifacts"))),
        pools=PoolConfig(run_actors_min=8, run_actors_max=16, workers_min=1, workers_max=2,
                         health_check_s=1.0),
        steering_capacity=3,
        stale_run_check_s=1.0,
        agents=AGENTS,
        extra_runners={**PROBE_RUNNERS, **SDK_RUNNERS},
        providers={"tools": {"builtin": True},
                   "knowledge_bases": ["docs"],
                   "models": [{"model_id": "gpt", "base_url": "http://127.0.0.1:9/v1", "model": "x",
                               "timeout_s": 2},
                              {"model_id": "gpt-main", "base_url": fake_openai.base_url,
                               "model": "gpt-main", "timeout_s": 10}]},
    )
    h = await Host.start(config)
    yield h
    await h.close()


@pytest.fixture
def conv() -> str:
    return f"conv-{uuid.uuid4().hex[:10]}"
