"""Operational constants of the actor layer, each overridable from the environment.

One place for the numbers an operator may need to turn (the way Ray Serve keeps
``serve/_private/constants.py``). Per-deployment settings that belong to the
configuration file (pool sizes, timeouts of a binding, …) live in
:mod:`actors.host_config`; what is here are the mechanics' own time constants
and bounds. Each is read once at import: ``RUNNERHOST_<NAME>`` overrides it.
"""
from __future__ import annotations

import os


def _float(name: str, default: float, *, minimum: float = 0.0) -> float:
    raw = os.environ.get(f"RUNNERHOST_{name}")
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"RUNNERHOST_{name}={raw!r} is not a number") from None
    if value < minimum:
        raise ValueError(f"RUNNERHOST_{name}={raw!r} must be ≥ {minimum}")
    return value


def _int(name: str, default: int, *, minimum: int = 0) -> int:
    return int(_float(name, default, minimum=minimum))


# -- the run's stream --------------------------------------------------------------------------
#: A long run's accepted frames are written to the ledger at least this often (joiners, crashes).
FLUSH_EVERY_S = _float("FLUSH_EVERY_S", 0.25)
#: … or as soon as this many frames are waiting.
FLUSH_AT_FRAMES = _int("FLUSH_AT_FRAMES", 64, minimum=1)
#: Results one executor batch may carry (the executor's queue bound: back-pressure on a runner).
EXECUTOR_MAX_BATCH = _int("EXECUTOR_MAX_BATCH", 256, minimum=1)
#: An executor silent this long may have died with its node while idle: ping it at run start.
EXECUTOR_RECHECK_S = _float("EXECUTOR_RECHECK_S", 2.0)
#: Frames a live run keeps in memory for joiners; older ones are read from the ledger.
LIVE_FRAMES_KEPT = _int("LIVE_FRAMES_KEPT", 512, minimum=8)
#: A joiner behind the frames kept in memory re-reads the ledger this often until they are flushed.
LEDGER_CATCH_UP_POLL_S = _float("LEDGER_CATCH_UP_POLL_S", 0.05, minimum=0.001)
#: The opening frame of an HTTP stream waits this long for the frames behind it (never past the
#: terminal one): a short run's whole stream is one body chunk. Later frames are never held back.
RELAY_FIRST_LINGER_S = _float("RELAY_FIRST_LINGER_S", 0.02)
#: Frames the HTTP relay buffers for a slow client before it applies back-pressure.
RELAY_QUEUE_FRAMES = _int("RELAY_QUEUE_FRAMES", 1024, minimum=8)

#: Longest text one explicit runner message (``message_send``) may carry; the delivery engine
#: splits it into platform-sized parts.
MESSAGE_SEND_MAX_CHARS = _int("MESSAGE_SEND_MAX_CHARS", 200_000, minimum=16)

#: A steering claim into a run whose plan is still on its way waits this long for its slot.
STEER_CLAIM_WAIT_S = _float("STEER_CLAIM_WAIT_S", 5.0)

# -- actor calls ---------------------------------------------------------------------------
#: Timeout of a liveness ping to any of our actors.
PING_TIMEOUT_S = _float("PING_TIMEOUT_S", 10.0, minimum=0.1)
#: Timeout of creating a session actor (a process: ~0.4 s idle, seconds on a loaded machine).
SESSION_CREATE_TIMEOUT_S = _float("SESSION_CREATE_TIMEOUT_S", 60.0, minimum=1.0)
#: Timeout of stopping a runner in its executor (cancel, deadline).
STOP_RUNNER_TIMEOUT_S = _float("STOP_RUNNER_TIMEOUT_S", 5.0, minimum=0.1)
#: An MCP server connection that is shutting down gets this long to close before it is cancelled.
MCP_SHUTDOWN_TIMEOUT_S = _float("MCP_SHUTDOWN_TIMEOUT_S", 10.0, minimum=0.1)
#: Attempts and back-off of idempotent calls to actors that restart (storage, registry).
CALL_RETRY_ATTEMPTS = _int("CALL_RETRY_ATTEMPTS", 8, minimum=1)
CALL_RETRY_FIRST_DELAY_S = _float("CALL_RETRY_FIRST_DELAY_S", 0.05)
CALL_RETRY_MAX_DELAY_S = _float("CALL_RETRY_MAX_DELAY_S", 2.0)
#: Actor handles (and last-heard times) a process keeps by address.
ADDRESS_CACHE_SIZE = _int("ADDRESS_CACHE_SIZE", 4096, minimum=16)
#: Cancels remembered for runs an executor has not seen yet (a cancel can overtake its run).
CANCEL_MEMORY = _int("CANCEL_MEMORY", 4096, minimum=16)

# -- control plane (storage, registry, providers; see actors/control_plane.py) ----------------
#: A storage actor replaced by one with another configuration gets this long to commit what it accepted.
CONTROL_PLANE_DRAIN_TIMEOUT_S = _float("CONTROL_PLANE_DRAIN_TIMEOUT_S", 60.0, minimum=0.1)
#: … and the name of a replaced actor must be free again within this long.
CONTROL_PLANE_REPLACE_TIMEOUT_S = _float("CONTROL_PLANE_REPLACE_TIMEOUT_S", 30.0, minimum=0.1)
#: An ingress replica's health check fails only once the registry has been unreachable this long
#: (one registry blip must not fail every replica at once); its own ping gives up after
#: HEALTH_REGISTRY_PING_S.
REGISTRY_UNREACHABLE_FAIL_S = _float("REGISTRY_UNREACHABLE_FAIL_S", 120.0)
HEALTH_REGISTRY_PING_S = _float("HEALTH_REGISTRY_PING_S", 5.0, minimum=0.1)
#: A binding granted "every knowledge base" re-reads the list of bases at most this often (bases
#: created through another replica); a base a binding names explicitly is looked up when unknown.
KNOWLEDGE_CATALOG_TTL_S = _float("KNOWLEDGE_CATALOG_TTL_S", 5.0)

# -- storage --------------------------------------------------------------------------------
#: Transient database errors (connection lost, Postgres restarting) are retried for this long.
DB_RETRY_DEADLINE_S = _float("DB_RETRY_DEADLINE_S", 30.0)
#: Writes waiting for a group commit beyond which new writes are refused (``rate_limited``).
COMMIT_BACKLOG_MAX = _int("COMMIT_BACKLOG_MAX", 20000, minimum=1)

# -- hosts ------------------------------------------------------------------------------------
#: A host writes its heartbeat this often; one silent for HOST_DEAD_AFTER_S is dead.
HOST_HEARTBEAT_S = _float("HOST_HEARTBEAT_S", 5.0, minimum=0.1)
HOST_DEAD_AFTER_S = _float("HOST_DEAD_AFTER_S", 20.0, minimum=0.5)
#: A starting host serves only once its pools hold their minimum (RunActors, the workers of bound
#: pooled runners) — or after this long, warming the rest while it serves (a cluster still adding
#: nodes for its run slots must not keep the host from serving forever).
READY_WARM_TIMEOUT_S = _float("READY_WARM_TIMEOUT_S", 120.0)
