"""Configuration: one ``runnerhost.toml`` (tomllib) plus ``RUNNERHOST_*`` environment overrides.

Precedence, highest first: explicit overrides (CLI flags) → environment →
the config file → built-in defaults. :func:`load_settings` produces one
:class:`Settings`, from which :meth:`Settings.host_config` derives the
actor layer's :class:`~actors.host_config.HostConfig`.

Environment variables:

==============================  ==================================================
``RUNNERHOST_CONFIG``           path of the config file (default ``./runnerhost.toml``
                                when it exists, else built-in defaults)
``RUNNERHOST_DATABASE_URL``     database URL (default: SQLite under the data dir); one with a
                                password reaches Ray actors by this name, never by value
``RUNNERHOST_DATA_DIR``         data directory (default ``./.runnerhost``)
``RUNNERHOST_HOST`` / ``_PORT`` Serve HTTP bind address / port
``RUNNERHOST_API_KEYS``         comma-separated plain keys, each optionally prefixed
                                with its scopes: ``admin:KEY,ingest:KEY,ingest+read:KEY``
                                (no prefix = admin). Hashed at load; never stored.
``RUNNERHOST_MAX_BODY_BYTES``   request body cap (default 1 MiB)
``RUNNERHOST_GATEWAY_URL``      URL external harnesses use for the MCP gateway
``RUNNERHOST_NAMESPACE``        Ray namespace of the host's named actors
``RUNNERHOST_DB_STATEMENT_TIMEOUT_S`` / ``_DB_CONNECT_TIMEOUT_S`` / ``_DB_POOL_PRE_PING``
                                Postgres statement and connect timeouts, pre-ping
``RUNNERHOST_RETENTION_*``      ``[retention]`` keys (``_SESSION_IDLE_S``, ``_EVENT_LOG_MAX_AGE_S``,
                                ``_TRANSCRIPT_MAX_AGE_S``, …; an age of ``off`` disables a kind)
``RUNNERHOST_OTLP_ENDPOINT``    OTLP/HTTP collector for traces (``[observability] otlp_endpoint``)
==============================  ==================================================

API keys never live in the file in plain text: ``[[api_keys]]`` entries carry
the SHA-256 hex digest (``runnerhost hash-key`` prints one).
"""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import tomllib
from pathlib import Path
from typing import Any, Literal, Mapping

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from actors.core.retention import RetentionPolicy
from actors.host_config import HostConfig, PoolConfig, StorageConfig
from actors.providers.models import ModelProviderConfig
from actors.providers.tools import ToolsConfig
from platforms.config import PlatformsSettings
from protocol.agents import AgentConfig

ENV_PREFIX = "RUNNERHOST_"
DEFAULT_CONFIG_FILE = "runnerhost.toml"
DEFAULT_DATA_DIR = ".runnerhost"
DEFAULT_PORT = 8000
DEFAULT_MAX_BODY = 1 << 20
ECHO_RUNNER = "plugin:builtin/echo/default"

Scope = Literal["ingest", "read", "admin"]
SCOPES: tuple[str, ...] = ("ingest", "read", "admin")


class ConfigError(ValueError):
    """The configuration cannot be used; the message says what to fix (never a secret)."""


def hash_key(key: str) -> str:
    """SHA-256 hex digest of an API key — the only form keys take at rest."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ApiKey(_Strict):
    """One API key, stored as its SHA-256 digest."""

    name: str = Field(default="key", max_length=64)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", repr=False)
    scopes: list[Scope] = Field(default_factory=lambda: ["admin"], min_length=1)

    def matches(self, presented: str) -> bool:
        return hmac.compare_digest(self.sha256, hash_key(presented))

    def allows(self, scope: str) -> bool:
        return "admin" in self.scopes or scope in self.scopes


class ServerSettings(_Strict):
    """``[server]``: the Serve HTTP ingress."""

    host: str = "127.0.0.1"
    port: int = Field(default=DEFAULT_PORT, ge=1, le=65535)
    max_body_bytes: int = Field(default=DEFAULT_MAX_BODY, ge=1024, le=256 << 20)
    gateway_url: str | None = None
    replicas: int = Field(default=1, ge=1, le=64)
    max_ongoing_requests: int = Field(default=256, ge=1)


class StorageSettings(_Strict):
    """``[storage]``: where facts live. Empty ``database_url`` = SQLite under ``data_dir``.

    ``database_url_env`` names an environment variable that holds the URL instead: a URL with a
    password travels to Ray actors and Serve replicas only that way (:meth:`Settings.deployable`)."""

    data_dir: str = DEFAULT_DATA_DIR
    database_url: str | None = None
    database_url_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    artifact_root: str | None = None
    max_batch: int = Field(default=256, ge=1)
    max_delay_ms: float = Field(default=3.0, ge=0)
    statement_timeout_s: float = Field(default=30.0, gt=0)
    connect_timeout_s: float = Field(default=10.0, gt=0)
    pool_pre_ping: bool = True

    @model_validator(mode="after")
    def _one_database(self) -> "StorageSettings":
        if self.database_url and self.database_url_env:
            raise ValueError("give database_url or database_url_env, not both")
        return self


class HostSettings(_Strict):
    """``[host]``: actor-layer knobs."""

    namespace: str = Field(default="runnerhost", min_length=1, max_length=128)
    steering_capacity: int = Field(default=32, ge=1, le=1024)
    spread: bool = True
    extra_runners: dict[str, str] = Field(default_factory=dict)
    stale_run_check_s: float = Field(default=60.0, ge=0)
    stale_run_grace_s: float = Field(default=30.0, ge=0)


class KnowledgeBaseSettings(_Strict):
    """``[providers.knowledge.<kb_id>]``: a knowledge base's search. With ``embedding_model_id``
    (an ``embedding`` model of ``[[providers.models]]``) it is searched by vector — chunks are
    embedded lazily, on the first search after an ingest — otherwise by full text."""

    embedding_model_id: str | None = Field(default=None, min_length=1, max_length=256)
    name: str | None = Field(default=None, max_length=256)
    description: str | None = Field(default=None, max_length=2000)


class SkillSettings(_Strict):
    """``[providers.skills.<name>]``: a skill runners may be granted (``resource_policy.skills``)."""

    display_name: str | None = Field(default=None, max_length=256)
    description: str | None = Field(default=None, max_length=4000)


class ObservabilitySettings(_Strict):
    """``[observability]``: traces go over OTLP/HTTP to ``otlp_endpoint`` (e.g.
    ``http://collector:4318``); without it trace ids are still made and propagated, nothing exported."""

    otlp_endpoint: str | None = Field(default=None, max_length=512, pattern=r"^https?://")


class ProvidersSettings(BaseModel):
    """``[providers]``: models, tool providers and knowledge bases.

    Validated with the provider classes' own models at load time, so a typo in a
    provider table fails ``runnerhost serve`` with a clear message, not a run later.
    Tools bindings may grant (and their JSON schemas) come from the tool registry.
    """

    model_config = ConfigDict(extra="forbid")

    models: list[ModelProviderConfig] = Field(default_factory=list)
    tools: ToolsConfig = Field(default_factory=ToolsConfig)
    knowledge_bases: list[str] = Field(default_factory=list)
    knowledge: dict[str, KnowledgeBaseSettings] = Field(default_factory=dict)
    skills: dict[str, SkillSettings] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _embedding_models_exist(self) -> "ProvidersSettings":
        types = {m.model_id: m.model_type for m in self.models}
        for kb_id, kb in self.knowledge.items():
            if kb.embedding_model_id and types.get(kb.embedding_model_id) != "embedding":
                raise ValueError(f"knowledge base {kb_id!r}: embedding_model_id {kb.embedding_model_id!r} is not "
                                 "an embedding model of [[providers.models]] (model_type = \"embedding\")")
        return self

    @field_validator("models")
    @classmethod
    def _unique_models(cls, value: list[ModelProviderConfig]) -> list[ModelProviderConfig]:
        ids = [m.model_id for m in value]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"duplicate model_id {dupes}")
        return value


class LangBotPluginSettings(_Strict):
    """One ``[[runners.langbot_plugins]]`` entry: a LangBot plugin directory whose Runner
    components become runners (``runners``: the component names to load, default all).
    Relative paths are relative to the working directory; the directory is shipped to every
    Ray node with the job's runtime env (``Settings.runtime_env``)."""

    path: str = Field(min_length=1, max_length=4096)
    runners: list[str] | None = None
    _targets: dict[str, str] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _is_a_plugin(self) -> "LangBotPluginSettings":
        from runners.langbot_sdk.plugins import configured_runners

        self.path = str(Path(self.path).expanduser().resolve())
        # read once, where the config is loaded; ValueError (→ ConfigError) names what is wrong
        self._targets = configured_runners(self.path, self.runners)
        return self

    def targets(self) -> dict[str, str]:
        """``{runner id: plugin target}`` (see :mod:`runners.langbot_sdk.plugins`)."""
        return dict(self._targets)


class RunnersSettings(_Strict):
    """``[runners]``: runners loaded by configuration."""

    langbot_plugins: list[LangBotPluginSettings] = Field(default_factory=list)


def default_agents() -> dict[str, AgentConfig]:
    """What a fresh machine gets with no config file: the echo agent."""
    return {"echo": AgentConfig(runner_id=ECHO_RUNNER, description="Deterministic echo agent")}


class Settings(_Strict):
    """Everything RunnerHost reads at start. Secrets appear only as hashes or env var names."""

    server: ServerSettings = Field(default_factory=ServerSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    host: HostSettings = Field(default_factory=HostSettings)
    pools: PoolConfig = Field(default_factory=PoolConfig)
    providers: ProvidersSettings = Field(default_factory=ProvidersSettings)
    runners: RunnersSettings = Field(default_factory=RunnersSettings)
    observability: ObservabilitySettings = Field(default_factory=ObservabilitySettings)
    agents: dict[str, AgentConfig] = Field(default_factory=default_agents)
    api_keys: list[ApiKey] = Field(default_factory=list)
    retention: RetentionPolicy = Field(default_factory=RetentionPolicy)
    #: Platform connections, delivery tuning and the scheduler (credentials: env var names only).
    platforms: PlatformsSettings = Field(default_factory=PlatformsSettings)
    config_path: str | None = None

    # -- derived -------------------------------------------------------------------------
    @property
    def data_dir(self) -> Path:
        return Path(self.storage.data_dir).expanduser().resolve()

    @property
    def database_url(self) -> str:
        """The database URL (read from the environment when configured by reference)."""
        if self.storage.database_url:
            return self.storage.database_url
        if self.storage.database_url_env:
            value = os.environ.get(self.storage.database_url_env)
            if not value:
                raise ConfigError(f"[storage] database_url_env names ${self.storage.database_url_env}, "
                                  "which is not set in this process's environment")
            return value
        from store.engine import default_sqlite_url
        return default_sqlite_url(self.data_dir)

    def deployable(self, env: Mapping[str, str] | None = None) -> "Settings":
        """These settings as they may travel in Serve deployment arguments (which the Serve
        controller checkpoints in the GCS): a database URL that carries a password goes by
        reference to ``RUNNERHOST_DATABASE_URL``, which must hold it in this process's environment
        — and so in every Ray worker's, when Ray was started with that environment (``runnerhost
        serve`` exports it; a cluster sets it on every node). Anything else → :class:`ConfigError`."""
        url = self.storage.database_url
        if not url or not has_password(url):
            return self
        env = os.environ if env is None else env
        name = ENV_PREFIX + "DATABASE_URL"
        if env.get(name) != url:
            raise ConfigError(
                f"the database URL carries a password, so it must not travel in deployment arguments: set it "
                f"in {name} in the environment of every Ray node (or name another variable with "
                "[storage] database_url_env) instead of the config file")
        storage = self.storage.model_copy(update={"database_url": None, "database_url_env": name})
        return self.model_copy(update={"storage": storage})

    @property
    def artifact_root(self) -> str:
        root = Path(self.storage.artifact_root).expanduser() if self.storage.artifact_root \
            else self.data_dir / "artifacts"
        return str(root.resolve())

    @property
    def gateway_url(self) -> str:
        if self.server.gateway_url:
            return self.server.gateway_url
        host = self.server.host
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"http://{host}:{self.server.port}/mcp"

    @property
    def auth_enabled(self) -> bool:
        return bool(self.api_keys)

    def resolved(self) -> "Settings":
        """A copy with absolute paths, so Ray workers with another cwd see the same files."""
        storage = self.storage.model_copy(update={"data_dir": str(self.data_dir),
                                                  "artifact_root": self.artifact_root})
        return self.model_copy(update={"storage": storage})

    def host_config(self) -> HostConfig:
        providers = self.providers.model_dump(mode="json", exclude_none=True)
        providers["knowledge_bases"] = sorted(set(providers.get("knowledge_bases") or [])
                                              | set(providers.get("knowledge") or {}))
        by_reference = self.storage.database_url is None and self.storage.database_url_env is not None
        database = ({"database_url_env": self.storage.database_url_env} if by_reference
                    else {"database_url": self.database_url})
        return HostConfig(
            namespace=self.host.namespace,
            storage=StorageConfig(**database, artifact_root=self.artifact_root,
                                  max_batch=self.storage.max_batch, max_delay_ms=self.storage.max_delay_ms,
                                  statement_timeout_s=self.storage.statement_timeout_s,
                                  connect_timeout_s=self.storage.connect_timeout_s,
                                  pool_pre_ping=self.storage.pool_pre_ping, retention=self.retention),
            pools=self.pools,
            steering_capacity=self.host.steering_capacity,
            providers=providers,
            agents=dict(self.agents),
            extra_runners=self.extra_runners(),
            gateway_url=self.gateway_url,
            spread=self.host.spread,
            stale_run_check_s=self.host.stale_run_check_s,
            stale_run_grace_s=self.host.stale_run_grace_s,
            otlp_endpoint=self.observability.otlp_endpoint,
            platforms=self.platforms.model_dump(mode="json"),
        )

    def extra_runners(self) -> dict[str, str]:
        """``[host] extra_runners`` plus one entry per configured LangBot plugin runner."""
        runners = dict(self.host.extra_runners)
        for plugin in self.runners.langbot_plugins:
            for runner_id, target in plugin.targets().items():
                if runner_id in runners:
                    raise ConfigError(f"runner {runner_id} is configured twice "
                                      f"([host] extra_runners / [[runners.langbot_plugins]] {plugin.path})")
                runners[runner_id] = target
        return runners

    def runtime_env(self) -> dict[str, Any]:
        """The Ray job runtime env: the redacting log filter runs in every worker process
        (``worker_process_setup_hook``, :mod:`protocol.logs`), and the configured LangBot plugin
        directories go to every node (``py_modules``)."""
        from protocol.logs import SETUP_HOOK
        from runners.langbot_sdk.plugins import runtime_env_for
        return {"worker_process_setup_hook": SETUP_HOOK,
                **runtime_env_for(p.path for p in self.runners.langbot_plugins)}

    def check_bind(self) -> None:
        """Refuse to expose an unauthenticated server beyond loopback."""
        if not self.auth_enabled and not is_loopback(self.server.host):
            raise ConfigError(
                f"refusing to bind {self.server.host!r} without API keys: configure [[api_keys]] in the "
                "config file (see `runnerhost hash-key`) or set RUNNERHOST_API_KEYS, or bind 127.0.0.1")


def has_password(url: str) -> bool:
    """Whether a database URL carries a password (in its authority or its query)."""
    from sqlalchemy.engine import make_url
    try:
        parsed = make_url(url)
    except Exception:  # not a URL we could parse: treat it as secret
        return True
    return bool(parsed.password) or "password" in {k.lower() for k in parsed.query}


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_env_keys(raw: str) -> list[ApiKey]:
    """``RUNNERHOST_API_KEYS``: ``KEY`` or ``scope[+scope]:KEY`` items, comma-separated; hashed here."""
    keys: list[ApiKey] = []
    for index, item in enumerate(p.strip() for p in raw.split(",")):
        if not item:
            continue
        prefix, sep, key = item.partition(":")
        wanted = prefix.split("+")
        if sep and key and all(w in SCOPES for w in wanted):
            scopes = wanted
        else:
            key, scopes = item, ["admin"]
        keys.append(ApiKey(name=f"env-{index}", sha256=hash_key(key), scopes=scopes))
    return keys


def find_config_file(path: str | os.PathLike | None, env: Mapping[str, str]) -> Path | None:
    if path:
        p = Path(path).expanduser()
        if not p.is_file():
            raise ConfigError(f"config file {str(p)!r} not found")
        return p
    if env.get(ENV_PREFIX + "CONFIG"):
        return find_config_file(env[ENV_PREFIX + "CONFIG"], {})
    p = Path(DEFAULT_CONFIG_FILE)
    return p if p.is_file() else None


def _flag(value: str) -> bool:
    """A boolean environment value: 1/true/yes/on or 0/false/no/off."""
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(value)


_flag.__name__ = "boolean"


def _age(value: str) -> float | None:
    """An age in seconds, or ``off`` (the kind is not cleaned up)."""
    return None if value.strip().lower() in ("off", "none") else float(value)


_age.__name__ = "number of seconds or 'off'"


def _paths(value: str) -> list[str]:
    return [p for p in value.split(os.pathsep) if p]


_paths.__name__ = f"'{os.pathsep}'-separated list of paths"


def _env_overrides(env: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {"server": {}, "storage": {}, "host": {}, "observability": {},
                                      "retention": {}}
    table = {
        "HOST": ("server", "host", str), "PORT": ("server", "port", int),
        "MAX_BODY_BYTES": ("server", "max_body_bytes", int), "GATEWAY_URL": ("server", "gateway_url", str),
        "DATABASE_URL": ("storage", "database_url", str), "DATA_DIR": ("storage", "data_dir", str),
        "DB_STATEMENT_TIMEOUT_S": ("storage", "statement_timeout_s", float),
        "DB_CONNECT_TIMEOUT_S": ("storage", "connect_timeout_s", float),
        "DB_POOL_PRE_PING": ("storage", "pool_pre_ping", _flag),
        "NAMESPACE": ("host", "namespace", str),
        "OTLP_ENDPOINT": ("observability", "otlp_endpoint", str),
        # [retention]: ages in seconds, "off" turns a kind off
        "RETENTION_INTERVAL_S": ("retention", "interval_s", float),
        "RETENTION_BATCH_LIMIT": ("retention", "batch_limit", int),
        "RETENTION_ARTIFACTS": ("retention", "artifacts", _flag),
        "RETENTION_SESSION_IDLE_S": ("retention", "session_idle_s", _age),
        "RETENTION_CLEANED_SESSION_KEEP_S": ("retention", "cleaned_session_keep_s", _age),
        "RETENTION_EVENT_LOG_MAX_AGE_S": ("retention", "event_log_max_age_s", _age),
        "RETENTION_TRANSCRIPT_MAX_AGE_S": ("retention", "transcript_max_age_s", _age),
        "RETENTION_WORKSPACE_ROOTS": ("retention", "workspace_roots", _paths),
        # platforms: delivery retries and the scheduler period
        "DELIVERY_MAX_ATTEMPTS": ("platforms.delivery", "max_attempts", int),
        "DELIVERY_BACKOFF_MAX_S": ("platforms.delivery", "backoff_max_s", float),
        "DELIVERY_TIMEOUT_S": ("platforms.delivery", "request_timeout_s", float),
        "SCHEDULER_INTERVAL_S": ("platforms", "scheduler_interval_s", float),
    }
    for name, (section, key, cast) in table.items():
        value = env.get(ENV_PREFIX + name)
        if value is None or value == "":
            continue
        try:
            node = out
            for part in section.split("."):
                node = node.setdefault(part, {})
            node[key] = cast(value)
        except ValueError:
            raise ConfigError(f"{ENV_PREFIX}{name} must be a {cast.__name__}") from None
    return out


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


def load_settings(path: str | os.PathLike | None = None, *, env: Mapping[str, str] | None = None,
                  overrides: Mapping[str, Mapping[str, Any]] | None = None) -> Settings:
    """File → env → overrides (e.g. ``{"server": {"port": 9000}}`` from CLI flags) → :class:`Settings`."""
    env = os.environ if env is None else env
    file = find_config_file(path, env)
    data: dict[str, Any] = {}
    if file is not None:
        try:
            data = tomllib.loads(file.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{file}: invalid TOML: {exc}") from None
        data["config_path"] = str(file.resolve())
    data = _merge(data, _env_overrides(env))
    for section, values in (overrides or {}).items():
        data = _merge(data, {section: {k: v for k, v in values.items() if v is not None}})
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        where = f" in {file}" if file else ""
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                             for e in exc.errors(include_url=False))
        raise ConfigError(f"invalid configuration{where}: {problems}") from None
    raw_keys = env.get(ENV_PREFIX + "API_KEYS")
    if raw_keys:
        settings = settings.model_copy(update={"api_keys": [*settings.api_keys, *parse_env_keys(raw_keys)]})
    return settings.resolved()
