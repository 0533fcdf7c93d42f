"""Settings of the actor layer (the serve layer loads them from runnerhost.toml + env)."""
from __future__ import annotations

import os
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from protocol.agents import AgentConfig

from .core.retention import RetentionPolicy


class PoolConfig(BaseModel):
    """Capacity of one host (one ingress replica). RunActors are processes (~0.4 s of CPU and
    ~100 MB each): the pool warms ``run_actors_min`` at start and grows on demand up to
    ``run_actors_max``. Each RunActor claims one ``runnerhost_run_slot`` resource, which the
    cluster's node types declare: when none is free, the pool's creations (at most ``max_creating``)
    stay pending — the autoscaler's signal to add a node — while runs wait in a FIFO queue of at
    most ``queue_max`` (then 429)."""

    model_config = ConfigDict(extra="forbid")

    #: Warm spares cost even when idle: Ray's core worker loop burns ~8 ms of CPU per second in
    #: each RunActor process (measured here), so the minimum stays small; demand grows the pool.
    run_actors_min: int = Field(default=4, ge=0)
    run_actors_max: int = Field(default=32, ge=1)
    #: Run slots (RunActor processes) the node offers when ``runnerhost serve`` starts a local Ray;
    #: 0 = as many as fit in 60% of the machine's memory. On a cluster, node types declare them.
    node_run_slots: int = Field(default=0, ge=0)
    #: Runs one RunActor serves at once. 1 = each active run is its own actor (process isolation);
    #: raise it for agents whose runs mostly wait on a model, to trade isolation for density.
    runs_per_actor: int = Field(default=1, ge=1, le=256)
    workers_min: int = Field(default=1, ge=0)
    workers_max: int = Field(default=4, ge=1)
    runs_per_worker: int = Field(default=32, ge=1)
    #: Creations in flight at once per pool (each costs ~0.4 s of a core): bounds a growth storm.
    max_creating: int = Field(default=2, ge=1)
    #: A member not ready within this is abandoned — unless no node has a free run slot and runs
    #: still wait for it: then it stays pending for the autoscaler (looked at again every period).
    create_timeout_s: float = Field(default=60.0, gt=0)
    #: The pool grows only when no slot has freed for this long while runs wait (the line stands
    #: still: long runs hold the slots). Short runs free slots constantly and are served by the
    #: RunActors there are — more processes would only compete for the same cores.
    grow_after_s: float = Field(default=1.0, ge=0)
    #: Runs that may wait for a slot (beyond: 429 rate_limited with Retry-After).
    queue_max: int = Field(default=10_000, ge=1)
    #: A queued run that waited this long for its conversation lane or a slot fails (host.queue_timeout).
    queue_timeout_s: float = Field(default=3600.0, gt=0)
    idle_shrink_s: float = Field(default=120.0, gt=0)
    # Pool upkeep period: ping idle members (a node can die under them while nothing runs), retire
    # those idle past idle_shrink_s down to the minimum, top up to the minimum. 0 turns it off.
    health_check_s: float = Field(default=5.0, ge=0)


class StorageConfig(BaseModel):
    """Constructor config of the storage actor (Ray keeps actor arguments in the GCS).

    The database is ``database_url`` or — when the URL carries a password — ``database_url_env``,
    the *name* of an environment variable holding it, read in the actor's own process
    (:meth:`resolve_database_url`): a secret never travels in actor or deployment arguments."""

    model_config = ConfigDict(extra="forbid")

    database_url: str | None = None
    database_url_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    artifact_root: str
    max_batch: int = Field(default=256, ge=1)
    max_delay_ms: float = Field(default=3.0, ge=0)
    # Postgres only: a statement over statement_timeout_s fails (retryable) instead of stalling every
    # writer; connecting gives up after connect_timeout_s; pooled connections are pinged on checkout.
    statement_timeout_s: float = Field(default=30.0, gt=0)
    connect_timeout_s: float = Field(default=10.0, gt=0)
    pool_pre_ping: bool = True
    # What the host's periodic retention round removes (actors/core/retention.py, [retention]).
    retention: RetentionPolicy = Field(default_factory=RetentionPolicy)

    @model_validator(mode="after")
    def _one_database(self) -> "StorageConfig":
        if (self.database_url is None) == (self.database_url_env is None):
            raise ValueError("give exactly one of database_url and database_url_env")
        return self

    def resolve_database_url(self) -> str:
        """The database URL, read from this process's environment when given by reference."""
        if self.database_url is not None:
            return self.database_url
        value = os.environ.get(self.database_url_env or "")
        if not value:
            raise RuntimeError(f"the database URL is taken from ${self.database_url_env}, which is not set "
                               "in this process's environment")
        return value

    def engine_options(self) -> dict[str, Any]:
        """Keyword arguments of :class:`store.engine.Database` beyond the URL."""
        return {"statement_timeout_s": self.statement_timeout_s, "connect_timeout_s": self.connect_timeout_s,
                "pool_pre_ping": self.pool_pre_ping}


class HostConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    namespace: str = "runnerhost"
    storage: StorageConfig
    pools: PoolConfig = Field(default_factory=PoolConfig)
    steering_capacity: int = Field(default=32, ge=1, le=1024)
    providers: dict[str, Any] = Field(default_factory=dict)   # {"models": [...], "tools": {...}}
    agents: dict[str, AgentConfig] = Field(default_factory=dict)
    extra_runners: dict[str, str] = Field(default_factory=dict)  # runner id -> "module:Class"
    gateway_url: str | None = None
    session_idle_s: float = Field(default=600.0, gt=0)
    # Every stale_run_check_s each host finalizes (host.lost, retryable) the runs of hosts that are
    # gone (heartbeat older than RUNNERHOST_HOST_DEAD_AFTER_S, queued runs included) and runs left
    # running more than stale_run_grace_s past their deadline; 0 turns the sweep off (it then runs
    # only at host start).
    stale_run_check_s: float = Field(default=10.0, ge=0)
    stale_run_grace_s: float = Field(default=30.0, ge=0)
    spread: bool = True
    # [observability]: OTLP/HTTP collector for traces; None = trace ids only, nothing exported.
    otlp_endpoint: str | None = None
    #: Platform connections, delivery tuning, the scheduler (``platforms.config.PlatformsSettings``
    #: as JSON; credentials are env var names only).
    platforms: dict[str, Any] = Field(default_factory=dict)
