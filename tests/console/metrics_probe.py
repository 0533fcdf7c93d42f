"""A small Ray actor that records runs the way the run path does: ledger row + metrics facade.

It stands in for the RunActor until the integrator places the calls in the run path: each run
is written to the real ledger (``RunLedgerStore`` on Postgres) and reported through
``actors.metrics`` at the same moments (start, terminal).
"""
from __future__ import annotations

import time

import ray

from actors import metrics
from store.engine import Database
from store.ledger import RunLedgerStore


@ray.remote(num_cpus=0)
class ModelRunPath:
    def __init__(self, database_url: str) -> None:
        self._db = Database(database_url)

    async def run(self, run_id: str, agent_id: str, status: str, code: str | None) -> str:
        started = time.monotonic()
        async with self._db.transaction() as s:
            await RunLedgerStore(s).start(run_id, agent_id=agent_id, runner_id="plugin:builtin/echo/default",
                                          deadline_at=time.time() + 60)
        metrics.run_started(agent_id, "plugin:builtin/echo/default")
        metrics.first_frame(agent_id, time.monotonic() - started)
        async with self._db.transaction() as s:
            run = await RunLedgerStore(s).transition(run_id, status, code)
        metrics.run_finished(run.agent_id, run.status, run.status_reason, time.monotonic() - started)
        return run.status

    def enabled(self) -> bool:
        return metrics.enabled()
