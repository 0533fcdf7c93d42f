"""RunnerHost's Prometheus metrics, defined once with ``ray.util.metrics``.

Ray exports what any process of the cluster records on its node's metrics endpoint
(``ray.nodes()[i]["MetricsExportPort"]``, scraped by Prometheus in a Ray cluster), with the
``ray_`` prefix and the recording process's ``WorkerId``/``Component`` labels: sum over them.

The facade is a set of plain functions the host code calls at the points listed in
``README.md`` (Observability). Invariants:

* outside Ray (``ray.is_initialized()`` false: plain-class unit tests, the CLI) every call is a
  no-op and creates nothing;
* a call never raises: a metric that cannot be recorded is logged once and skipped, so
  instrumentation can never fail a run;
* tag values are strings capped at :data:`MAX_TAG_LEN` (``None`` → ``"none"``), so one odd
  runner code cannot blow up a series name; keep tags to bounded sets (agent ids, runner ids,
  terminal codes, pool names).

Metric names (``ray_`` prefix added by Ray on export):

=============================================  =========  ====================================
``runnerhost_runs_started_total``              counter    agent, runner
``runnerhost_runs_finished_total``             counter    agent, status, code
``runnerhost_run_duration_seconds``            histogram  agent, status
``runnerhost_run_first_frame_seconds``         histogram  agent
``runnerhost_admission_queue_length``          gauge      queue
``runnerhost_admission_wait_seconds``          histogram  queue
``runnerhost_pool_size`` / ``_leased`` /       gauge      pool
``_creating`` / ``_max``
``runnerhost_storage_batch_ops``               histogram  —
``runnerhost_storage_commit_seconds``          histogram  —
``runnerhost_storage_pending_ops``             gauge      —
``runnerhost_steering_total``                  counter    outcome (claimed|injected|dropped|refused)
``runnerhost_gateway_calls_total``             counter    tool, outcome (ok|<error code>)
``runnerhost_deliveries_total``                counter    platform, outcome (ok|retry|deferred|failed), one per platform call
``runnerhost_actor_call_retries_total``        counter    what, error (a call that met a dead actor)
``runnerhost_db_retries_total``                counter    op, error (a transient database error)
=============================================  =========  ====================================
"""
from __future__ import annotations

import threading
from typing import Any, Mapping

from protocol.logs import get_logger

log = get_logger(__name__)

MAX_TAG_LEN = 64
PREFIX = "runnerhost_"

DURATION_BUCKETS = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600]
FIRST_FRAME_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]
WAIT_BUCKETS = [0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300]
BATCH_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]
COMMIT_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5]

# name → (kind, description, tag keys, histogram boundaries)
_DEFINITIONS: dict[str, tuple[str, str, tuple[str, ...], list[float] | None]] = {
    "runs_started_total": ("counter", "Runs that started (a RunActor began executing them)",
                           ("agent", "runner"), None),
    "runs_finished_total": ("counter", "Runs that reached a terminal status, by terminal code",
                            ("agent", "status", "code"), None),
    "run_duration_seconds": ("histogram", "Wall time from run start to its terminal frame",
                             ("agent", "status"), DURATION_BUCKETS),
    "run_first_frame_seconds": ("histogram", "Time from admission to the run's first runner frame",
                                ("agent",), FIRST_FRAME_BUCKETS),
    "admission_queue_length": ("gauge", "Runs waiting to start (lane or pool), per recording process",
                               ("queue",), None),
    "admission_wait_seconds": ("histogram", "How long a run waited between admission and start",
                               ("queue",), WAIT_BUCKETS),
    "pool_size": ("gauge", "Members of a lease pool", ("pool",), None),
    "pool_leased": ("gauge", "Leases held on a pool's members", ("pool",), None),
    "pool_creating": ("gauge", "Pool members being created", ("pool",), None),
    "pool_max": ("gauge", "A pool's maximum size", ("pool",), None),
    "storage_batch_ops": ("histogram", "Write ops per group-commit batch", (), BATCH_BUCKETS),
    "storage_commit_seconds": ("histogram", "Latency of one group-commit transaction", (), COMMIT_BUCKETS),
    "storage_pending_ops": ("gauge", "Write ops waiting for the next group commit", (), None),
    "steering_total": ("counter", "Steering outcomes: claimed, injected, dropped, refused",
                       ("outcome",), None),
    "gateway_calls_total": ("counter", "Harness gateway (MCP) calls by tool and outcome",
                            ("tool", "outcome"), None),
    "deliveries_total": ("counter", "Delivery attempts by platform and outcome", ("platform", "outcome"), None),
    "actor_call_retries_total": ("counter", "Idempotent actor calls retried because the actor died or restarted",
                                 ("what", "error"), None),
    "db_retries_total": ("counter", "Database operations retried after a transient error (connection lost, "
                         "server restarting)", ("op", "error"), None),
}

_lock = threading.Lock()
_metrics: dict[str, Any] | None = None
_broken: set[str] = set()


def _tag(value: Any) -> str:
    text = "none" if value is None else str(value)
    return text[:MAX_TAG_LEN] or "none"


def _registry() -> dict[str, Any] | None:
    """This process's metric objects, created on first use inside Ray; None outside Ray."""
    global _metrics
    if _metrics is not None:
        return _metrics
    try:
        import ray
        if not ray.is_initialized():
            return None
        from ray.util import metrics as ray_metrics
    except Exception:  # pragma: no cover - ray is a hard dependency
        return None
    with _lock:
        if _metrics is None:
            built: dict[str, Any] = {}
            for name, (kind, description, tags, buckets) in _DEFINITIONS.items():
                try:
                    if kind == "counter":
                        built[name] = ray_metrics.Counter(PREFIX + name, description, tag_keys=tags)
                    elif kind == "gauge":
                        built[name] = ray_metrics.Gauge(PREFIX + name, description, tag_keys=tags)
                    else:
                        built[name] = ray_metrics.Histogram(PREFIX + name, description, boundaries=buckets,
                                                            tag_keys=tags)
                except Exception as exc:
                    log.warning("metric %s unavailable: %s", name, type(exc).__name__)
            _metrics = built
    return _metrics


def _record(name: str, method: str, value: float, tags: Mapping[str, Any]) -> None:
    registry = _registry()
    if registry is None or name not in registry:
        return
    try:
        getattr(registry[name], method)(value, tags={k: _tag(v) for k, v in tags.items()})
    except Exception as exc:  # never let a metric fail the caller
        if name not in _broken:
            _broken.add(name)
            log.warning("recording metric %s failed: %s", name, type(exc).__name__)


def enabled() -> bool:
    """Whether calls record anything in this process (inside Ray)."""
    return _registry() is not None


# -- runs ---------------------------------------------------------------------------------
def run_started(agent_id: str | None, runner_id: str | None) -> None:
    _record("runs_started_total", "inc", 1, {"agent": agent_id, "runner": runner_id})


def run_finished(agent_id: str | None, status: str, code: str | None, duration_s: float | None = None) -> None:
    """One terminal run: ``status`` is the ledger status, ``code`` the ledger ``status_reason``
    (the ``run.failed`` code or the ``finish_reason``), so the counts match the ledger's."""
    _record("runs_finished_total", "inc", 1, {"agent": agent_id, "status": status, "code": code})
    if duration_s is not None and duration_s >= 0:
        _record("run_duration_seconds", "observe", duration_s, {"agent": agent_id, "status": status})


def first_frame(agent_id: str | None, seconds: float) -> None:
    if seconds >= 0:
        _record("run_first_frame_seconds", "observe", seconds, {"agent": agent_id})


# -- admission -------------------------------------------------------------------------------
def admission_queue(queue: str, length: int) -> None:
    """The current number of runs waiting in ``queue`` (e.g. ``lane``, ``run-actor pool``)."""
    _record("admission_queue_length", "set", max(0, length), {"queue": queue})


def admission_wait(queue: str, seconds: float) -> None:
    if seconds >= 0:
        _record("admission_wait_seconds", "observe", seconds, {"queue": queue})


# -- pools --------------------------------------------------------------------------------------
def pool_observed(pool: str, *, size: int, leased: int, creating: int, max_size: int) -> None:
    tags = {"pool": pool}
    _record("pool_size", "set", size, tags)
    _record("pool_leased", "set", leased, tags)
    _record("pool_creating", "set", creating, tags)
    _record("pool_max", "set", max_size, tags)


def observe_health(health: Mapping[str, Any]) -> None:
    """Set the pool and storage gauges from a ``Host.health()`` dict."""
    for pool in health.get("pools") or []:
        pool_observed(pool["name"], size=pool.get("size") or 0, leased=pool.get("leased") or 0,
                      creating=pool.get("creating") or 0, max_size=pool.get("max") or 0)
        if pool.get("queue_length") is not None:
            admission_queue(pool["name"], pool["queue_length"])
    pending = (health.get("storage") or {}).get("pending")
    if pending is not None:
        storage_pending(pending)


# -- storage -----------------------------------------------------------------------------------
def storage_batch(ops: int, commit_s: float) -> None:
    """One committed group-commit batch of ``ops`` write ops that took ``commit_s`` seconds."""
    _record("storage_batch_ops", "observe", ops, {})
    if commit_s >= 0:
        _record("storage_commit_seconds", "observe", commit_s, {})


def actor_call_retried(what: str, error: BaseException) -> None:
    """An idempotent call met a dead or restarting actor and will be sent again."""
    _record("actor_call_retries_total", "inc", 1, {"what": what, "error": type(error).__name__})


def db_retried(op: str, error: BaseException) -> None:
    """A database operation (``read``/``write``) hit a transient error and will be retried."""
    _record("db_retries_total", "inc", 1, {"op": op, "error": type(error).__name__})


def storage_pending(ops: int) -> None:
    _record("storage_pending_ops", "set", max(0, ops), {})


# -- steering, gateway, delivery -----------------------------------------------------------------
STEERING_OUTCOMES = ("claimed", "injected", "dropped", "refused")


def steering(outcome: str, count: int = 1) -> None:
    """``claimed`` into a run's queue, ``injected`` by a pull, ``dropped`` at run end, ``refused``
    (full queue or failed claim: the event took the normal path)."""
    if count > 0:
        _record("steering_total", "inc", count, {"outcome": outcome})


def gateway_call(tool: str, outcome: str) -> None:
    """One MCP gateway call: ``outcome`` is ``ok`` or the error code (``unauthorized``, …)."""
    _record("gateway_calls_total", "inc", 1, {"tool": tool, "outcome": outcome})


def delivery(platform: str, outcome: str) -> None:
    _record("deliveries_total", "inc", 1, {"platform": platform, "outcome": outcome})
