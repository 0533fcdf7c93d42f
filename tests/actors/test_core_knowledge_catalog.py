"""The knowledge-base catalog is shared through the store, not frozen per host: a run that names a
base this host has not seen (created through another ingress replica) makes the host read the
list of bases once; a known base costs nothing. Plain classes, no Ray."""
from __future__ import annotations

import asyncio

import pytest

from actors import constants
from actors.core.authz import ResourceCatalog, compute_access
from actors.core.driver import RunDriver
from protocol.agents import AgentBinding, AgentConfig, ResourcePolicy
from protocol.manifest import Permissions, RunnerManifest

RUNNER = "plugin:test/kb/default"
MANIFEST = RunnerManifest(id=RUNNER, label="kb", permissions=Permissions(knowledge_bases=["list", "retrieve"]))


class StorePorts:
    """Only what the catalog refresh uses: storage reads, counted; the store's list of bases."""

    def __init__(self, bases: list[str]) -> None:
        self.bases = bases
        self.reads = 0
        self.gate: asyncio.Event | None = None
        self.fail = False

    async def read(self, kind: str, **kwargs):
        assert kind == "knowledge_bases"
        self.reads += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise ConnectionError("storage blip")
        return list(self.bases)


def binding(kbs: list[str] | None, **config) -> AgentBinding:
    return AgentBinding.from_agent("a", AgentConfig(runner_id=RUNNER, runner_config=config,
                                                    resource_policy=ResourcePolicy(knowledge_bases=kbs)))


def granted(driver: RunDriver, b: AgentBinding) -> list[str]:
    access = compute_access(run_id="r", manifest=MANIFEST, binding=b, conversation_id="c", thread_id=None,
                            catalog=driver.catalog)
    return sorted(access.knowledge_bases)


def driver_on(ports: StorePorts, known: list[str]) -> RunDriver:
    return RunDriver(ports, slots=None, catalog=ResourceCatalog(knowledge_bases=known))


async def test_a_base_created_elsewhere_is_learnt_with_one_read_and_a_known_one_costs_none():
    ports = StorePorts(["kb-old", "kb-new"])
    driver = driver_on(ports, ["kb-old"])  # this host's snapshot predates kb-new
    wanted = binding(["kb-new"])
    assert granted(driver, wanted) == []  # what the per-host snapshot alone would grant
    await driver.learn_knowledge_bases(MANIFEST, wanted)
    assert ports.reads == 1 and granted(driver, wanted) == ["kb-new"]
    for _ in range(5):
        await driver.learn_knowledge_bases(MANIFEST, wanted)
        await driver.learn_knowledge_bases(MANIFEST, binding(["kb-old"]))
    assert ports.reads == 1  # known bases: no more reads


async def test_a_runner_without_knowledge_permissions_and_an_empty_grant_never_read():
    ports = StorePorts(["kb-new"])
    driver = driver_on(ports, [])
    no_kb = MANIFEST.model_copy(update={"permissions": Permissions()})
    await driver.learn_knowledge_bases(no_kb, binding(["kb-new"]))
    await driver.learn_knowledge_bases(MANIFEST, binding([]))
    assert ports.reads == 0


async def test_the_runner_config_selection_names_bases_too():
    ports = StorePorts(["kb-a", "kb-b"])
    driver = driver_on(ports, [])
    wanted = binding(None, knowledge_bases=["kb-b"])
    await driver.learn_knowledge_bases(MANIFEST, wanted)
    assert ports.reads == 1 and granted(driver, wanted) == ["kb-b"]


async def test_every_base_grants_re_read_the_list_at_most_once_per_ttl(monkeypatch):
    ports = StorePorts(["kb-a"])
    driver = driver_on(ports, [])
    everything = binding(None)
    await driver.learn_knowledge_bases(MANIFEST, everything)
    assert ports.reads == 1 and granted(driver, everything) == ["kb-a"]
    ports.bases.append("kb-b")
    await driver.learn_knowledge_bases(MANIFEST, everything)
    assert ports.reads == 1  # within the TTL
    monkeypatch.setattr(constants, "KNOWLEDGE_CATALOG_TTL_S", 0.0)
    await driver.learn_knowledge_bases(MANIFEST, everything)
    assert ports.reads == 2 and granted(driver, everything) == ["kb-a", "kb-b"]


async def test_concurrent_runs_share_one_read_and_a_failed_read_keeps_the_catalog():
    ports = StorePorts(["kb-x", "kb-new"])
    ports.gate = asyncio.Event()
    driver = driver_on(ports, ["kb-x"])
    wanted = binding(["kb-new"])
    waiting = [asyncio.ensure_future(driver.learn_knowledge_bases(MANIFEST, wanted)) for _ in range(10)]
    while ports.reads == 0:
        await asyncio.sleep(0)
    ports.gate.set()
    await asyncio.wait_for(asyncio.gather(*waiting), 5)
    assert ports.reads == 1 and granted(driver, wanted) == ["kb-new"]

    broken = StorePorts(["kb-x", "kb-other"])
    broken.fail = True
    driver = driver_on(broken, ["kb-x"])
    await driver.learn_knowledge_bases(MANIFEST, binding(["kb-other"]))  # does not raise
    assert broken.reads == 1 and driver.catalog.knowledge_bases == ["kb-x"]


@pytest.fixture(autouse=True)
def _ttl(monkeypatch):
    monkeypatch.setattr(constants, "KNOWLEDGE_CATALOG_TTL_S", 60.0)
