"""The Serve application for a multi-node Ray cluster, as an import path.

``runnerhost serve`` starts its *own* local Ray (``ray.init(address="local")``),
so on a cluster the app is deployed by Ray Serve itself, from an import path:

* ``serve.cluster_app:app_builder`` — an application builder; Serve calls it
  with the ``args`` of the Serve config (all optional, see :func:`app_builder`).
* ``serve.cluster_app:app`` — the same with no args (built on first access).

Used by ``deploy/serve.yaml`` (``serve deploy`` on a ``cluster.yaml`` cluster)
and by ``deploy/rayservice.yaml`` (KubeRay ``serveConfigV2``). Settings come
from the environment of the process that builds the app, exactly as for
``runnerhost serve`` (``RUNNERHOST_CONFIG``, ``RUNNERHOST_DATABASE_URL``,
``RUNNERHOST_API_KEYS``, … — see :mod:`serve.config`), so give every Ray node
the same ``RUNNERHOST_*`` environment (a Kubernetes Secret, an env file).

A cluster's Serve proxies listen beyond loopback, so building refuses to go on
without API keys; it also refuses a non-Postgres database (the StorageActor
may restart on another head, and Postgres is the one shared store) unless
``allow_sqlite`` is set. Migrations run at build time (idempotent) unless
``migrate`` is false.

The ingress replicas are pinned to the head node by default, like the storage,
registry and provider actors (``actors/placement.py``): a replica's Host owns
its pooled RunActors and runner workers (Ray fate-shares actors with their
owner) and drives its runs, so a replica lost with a worker node would take
those with it and leave its runs unrecorded. ``spread_ingress: true`` lets
Serve place replicas anywhere (more relay capacity, at that risk).
"""
from __future__ import annotations

import concurrent.futures
from typing import Any

from .config import ConfigError, Settings, load_settings
from .deployment import build_app

CLUSTER_BIND = "0.0.0.0"


def cluster_settings(args: dict[str, Any] | None = None, env: dict[str, str] | None = None) -> Settings:
    """Settings for a cluster deployment; raises :class:`ConfigError` when they are not safe to serve."""
    import os

    args = dict(args or {})
    env = dict(os.environ if env is None else env)
    overrides: dict[str, dict[str, Any]] = {
        # the bind address only shapes the default gateway URL and the auth check here: Serve's
        # http_options decide where the proxies listen — on a cluster, beyond loopback
        "server": {"host": env.get("RUNNERHOST_HOST") or CLUSTER_BIND},
        "storage": {"data_dir": args.get("data_dir")},
    }
    if args.get("replicas"):
        overrides["server"]["replicas"] = int(args["replicas"])
    settings = load_settings(args.get("config"), env=env, overrides=overrides)
    if not settings.auth_enabled:
        raise ConfigError(
            "refusing to deploy RunnerHost on a cluster without API keys: its Serve proxies listen beyond "
            "loopback. Set RUNNERHOST_API_KEYS (e.g. 'admin:KEY,ingest:KEY2') in the environment of every "
            "Ray node, or add [[api_keys]] (SHA-256 digests, see `runnerhost hash-key`) to the config file")
    if not args.get("allow_sqlite") and not _is_postgres(settings.database_url):
        raise ConfigError(
            "a cluster deployment needs Postgres: set RUNNERHOST_DATABASE_URL "
            "(postgresql+asyncpg://USER:PASSWORD@HOST:5432/DB) on every Ray node "
            "(or pass allow_sqlite: true in the Serve config's args to keep SQLite on the head's disk)")
    settings.deployable(env)  # refuses a database password that could only travel by value
    return settings


def _is_postgres(url: str) -> bool:
    from sqlalchemy.engine import make_url
    try:
        return make_url(url).get_backend_name() == "postgresql"
    except Exception:
        return False


def _migrate(url: str) -> None:
    from store.migrate import upgrade
    # upgrade() runs its own event loop: keep it off any loop running in this thread
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(upgrade, url).result()


def app_builder(args: dict[str, Any]):
    """Serve application builder. ``args`` (all optional):

    ``config``        path of a ``runnerhost.toml`` on the nodes (else ``RUNNERHOST_CONFIG`` / defaults)
    ``data_dir``      data dir for artifacts (an absolute path on the head node; mount a volume there)
    ``replicas``      ingress replicas (else ``[server] replicas``)
    ``migrate``       run the database migrations first (default true)
    ``allow_sqlite``  accept a SQLite database (default false)
    ``spread_ingress`` let Serve place ingress replicas on any node (default false: on the head)
    """
    from actors.placement import head_pin

    args = dict(args or {})
    settings = cluster_settings(args)
    if args.get("migrate", True):
        _migrate(settings.database_url)
    return build_app(settings, ray_actor_options=None if args.get("spread_ingress") else head_pin())


def __getattr__(name: str):
    """``serve.cluster_app:app`` — the application built from the environment alone."""
    if name == "app":
        return app_builder({})
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
