"""Run an UNMODIFIED LangBot SDK ``Runner`` subclass as a RunnerHost runner.

The seam is the SDK's own: a component is bound once with
``Runner.bind_runtime(plugin_runtime_handler=...)`` and each run goes through
``Runner.invoke(ctx)``, which builds the SDK's ``RunnerAPIProxy`` (permission
checks against ``ctx.resources`` / ``ctx.context.available_apis``, deadlines,
error wrapping, tool tracing) around that handler. We bind a
:class:`~runners.langbot_sdk.handler.HostRuntimeHandler`; per run it routes
every action to a :class:`~runners.langbot_sdk.handler.HostActionHandler` over
the run's :class:`RunnerAPI` — so the RunActor's frozen snapshot authorizes
every call, and refusals reach the SDK runner as ``AgentAPIException`` with
``error.code`` ``unauthorized`` / ``not_found`` / …

Results: each SDK ``RunnerResult`` becomes ``result.model_dump(mode="json")``
with ``sequence`` renumbered 1, 2, 3… per run. ``processor.log`` entries (an
SDK-only type our protocol does not define) are NOT forwarded: they go to the
``runners.langbot_sdk.runner`` logger with the run id. An exception escaping
the SDK runner becomes one ``run.failed``: ``runner.api.<code>`` for a host
API error (``runner.api.unauthorized`` also for the SDK's local
``PermissionDeniedError``), ``runner.timeout`` for a transport timeout,
``runner.exception`` otherwise.
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib
import importlib.machinery
import importlib.util
import logging
import sys
from pathlib import Path
from typing import Any, AsyncIterator, Mapping

from ._compat import require_langbot_plugin

require_langbot_plugin()

from langbot_plugin.api.definition.components.runner.runner import Runner as SDKRunner  # noqa: E402
from langbot_plugin.api.definition.plugin import BasePlugin  # noqa: E402
from langbot_plugin.api.entities.builtin.runner.context import RunnerContext  # noqa: E402
from langbot_plugin.api.entities.builtin.runner.errors import AgentAPIException  # noqa: E402
from langbot_plugin.api.proxies.runner.common import PermissionDeniedError  # noqa: E402
from langbot_plugin.entities.io.errors import ActionCallTimeoutError  # noqa: E402
from pydantic import BaseModel, ValidationError  # noqa: E402

from protocol.context import RunContext  # noqa: E402
from protocol.ids import parse_runner_id  # noqa: E402
from protocol.logs import get_logger
from protocol.manifest import RunnerManifest  # noqa: E402
from protocol.results import TERMINAL_TYPES, RunResult  # noqa: E402
from protocol.runner import Runner, RunnerAPI  # noqa: E402

from .handler import HostActionHandler, HostRuntimeHandler, advertise_replies  # noqa: E402
from .manifest import manifest_from_sdk  # noqa: E402

log = get_logger(__name__)
runner_log = get_logger("runners.langbot_sdk.runner")

PROCESSOR_LOG = "processor.log"
_LOG_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO,
               "warning": logging.WARNING, "error": logging.ERROR}
_MAX_ERROR_CHARS = 2000


class HostPlugin(BasePlugin):
    """Stand-in for the plugin object of an SDK runner (``self.plugin``).

    Its ``LangBotAPIProxy`` helpers are run-scoped by the SDK, so inside a run
    they use that run's authorized API; ``get_config()`` is ``plugin_config``.
    """


class LangBotRunnerAdapter(Runner):
    """A :class:`protocol.runner.Runner` that hosts one SDK runner class.

    ``LangBotRunnerAdapter(MySDKRunner, manifest)`` — ``manifest`` may be
    omitted on subclasses made by :func:`langbot_runner` (class attribute).
    One adapter = one SDK runner instance serving concurrent runs, as the SDK's
    stateless component model expects. ``plugin_config`` is what the SDK
    runner's ``get_plugin_config()`` returns; per-run configuration is
    ``ctx.config`` (= ``runner_config``). ``sdk_plugin`` is a ``BasePlugin``
    class or instance for ``self.plugin`` (default :class:`HostPlugin`).
    """

    sdk_runner_cls: type[SDKRunner]

    def __init__(self, sdk_runner_cls: type[SDKRunner], manifest: RunnerManifest | None = None, *,
                 plugin_config: Mapping[str, Any] | None = None, plugin_identity: str | None = None,
                 sdk_plugin: BasePlugin | type[BasePlugin] | None = None, host_version: str | None = None):
        if not (isinstance(sdk_runner_cls, type) and issubclass(sdk_runner_cls, SDKRunner)):
            raise TypeError("sdk_runner_cls must be a langbot_plugin Runner subclass, "
                            f"got {sdk_runner_cls!r}")
        manifest = manifest if manifest is not None else getattr(type(self), "manifest", None)
        if manifest is None:
            raise ValueError("a manifest is required: pass one (see manifest_from_sdk) "
                             "or use langbot_runner(...)")
        self.manifest = RunnerManifest.model_validate(manifest)
        self.sdk_runner_cls = sdk_runner_cls
        rid = parse_runner_id(self.manifest.id)
        self.router = HostRuntimeHandler(host_version=host_version)
        self.plugin_config = dict(plugin_config or {})

        self.sdk_runner = sdk_runner_cls()
        self.sdk_runner.bind_runtime(plugin_runtime_handler=self.router,
                                     plugin_config=self.plugin_config,
                                     plugin_identity=plugin_identity or f"{rid.author}/{rid.name}")
        plugin_obj = sdk_plugin() if isinstance(sdk_plugin, type) else (sdk_plugin or HostPlugin())
        plugin_obj.plugin_runtime_handler = self.router
        plugin_obj.config = dict(self.plugin_config)
        self.sdk_runner.plugin = plugin_obj
        self._initialized = False
        self._init_lock: asyncio.Lock | None = None

    # -- lifecycle ---------------------------------------------------------------
    async def _ensure_initialized(self) -> None:
        """``plugin.initialize()`` then ``runner.initialize()``, once, before the first run."""
        if self._initialized:
            return
        if self._init_lock is None:
            self._init_lock = asyncio.Lock()
        async with self._init_lock:
            if not self._initialized:
                await self.sdk_runner.plugin.initialize()
                await self.sdk_runner.initialize()
                self._initialized = True

    async def close(self) -> None:
        self._initialized = False

    # -- the run -------------------------------------------------------------------
    async def run(self, ctx: RunContext | Mapping[str, Any], api: RunnerAPI) -> AsyncIterator[dict[str, Any]]:
        wire = _wire(ctx)
        run_id = str(wire.get("run_id") or getattr(api, "run_id", None) or "unknown")
        sequence = 0

        def emit(result: dict[str, Any]) -> dict[str, Any]:
            nonlocal sequence
            sequence += 1
            return {**result, "run_id": run_id, "sequence": sequence}

        try:
            await self._ensure_initialized()
        except Exception as exc:
            log.exception("SDK runner %s failed to initialize", self.manifest.id)
            yield emit(_failed(run_id, "runner.initialize_failed", f"runner initialization failed: {_short(exc)}"))
            return
        try:
            sdk_ctx = RunnerContext.model_validate(advertise_replies(wire))
        except ValidationError as exc:
            yield emit(_failed(run_id, "runner.context_invalid",
                               f"context does not validate as the SDK RunnerContext: {_short(exc)}"))
            return

        if run_id in self.router.active_runs:
            yield emit(_failed(run_id, "runner.duplicate_run", "this run is already active on this runner"))
            return
        handler = HostActionHandler(api, run_id=run_id, host_version=self.router.host_version,
                                    reply_target=(wire.get("delivery") or {}).get("reply_target"),
                                    bot_id=(wire.get("conversation") or {}).get("bot_id"))
        terminal = False
        with self.router.attach(handler):
            try:
                async with contextlib.aclosing(self.sdk_runner.invoke(sdk_ctx)) as results:
                    async for result in results:
                        converted = self.convert_result(result, run_id)
                        if converted is None:
                            continue
                        terminal = terminal or converted.get("type") in TERMINAL_TYPES
                        yield emit(converted)
            except Exception as exc:
                if terminal:
                    log.warning("run %s: SDK runner raised after its terminal result: %s", run_id, _short(exc))
                else:
                    yield emit(failure_from_exception(run_id, exc))

    def convert_result(self, result: Any, run_id: str) -> dict[str, Any] | None:
        """SDK ``RunnerResult`` → our RunResult dict; ``processor.log`` → logged, None."""
        if isinstance(result, BaseModel):
            data = result.model_dump(mode="json")
        elif isinstance(result, Mapping):
            data = dict(result)
        else:
            raise TypeError(f"SDK runner produced a {type(result).__name__}, not a RunnerResult")
        rtype = data.get("type")
        rtype = getattr(rtype, "value", rtype)
        data["type"] = rtype
        if rtype == PROCESSOR_LOG:
            payload = data.get("data") or {}
            runner_log.log(_LOG_LEVELS.get(str(payload.get("level")), logging.INFO),
                           "[%s run=%s] %s", self.manifest.id, run_id, payload.get("text", ""))
            return None
        data.pop("sequence", None)
        if data.get("usage") is None:
            data.pop("usage", None)
        if data.get("timestamp") is None:
            data.pop("timestamp", None)
        return data


def failure_from_exception(run_id: str, exc: BaseException) -> dict[str, Any]:
    """One ``run.failed`` for an exception that escaped the SDK runner."""
    if isinstance(exc, AgentAPIException):
        err = exc.error
        return _failed(run_id, f"runner.api.{err.code}", f"{err.code}: {err.message}", err.retryable)
    if isinstance(exc, PermissionDeniedError):
        return _failed(run_id, "runner.api.unauthorized", f"unauthorized: {_short(exc)}")
    if isinstance(exc, (asyncio.TimeoutError, ActionCallTimeoutError)):
        return _failed(run_id, "runner.timeout", _short(exc) or "runner timed out", True)
    return _failed(run_id, "runner.exception", f"{type(exc).__name__}: {_short(exc)}")


def _failed(run_id: str, code: str, error: str, retryable: bool = False) -> dict[str, Any]:
    return RunResult.failed(run_id, code, error, retryable).model_dump(mode="json", exclude_none=True)


def _short(exc: BaseException) -> str:
    return str(exc)[:_MAX_ERROR_CHARS]


def _wire(ctx: Any) -> dict[str, Any]:
    if isinstance(ctx, RunContext):
        return ctx.to_wire()
    if isinstance(ctx, BaseModel):
        return ctx.model_dump(mode="json")
    if isinstance(ctx, Mapping):
        return dict(ctx)
    raise TypeError(f"ctx must be a RunContext, got {type(ctx).__name__}")


# -- registration helpers -----------------------------------------------------------
def langbot_runner(sdk_runner_cls: type[SDKRunner], manifest: RunnerManifest | None = None, *,
                   plugin_config: Mapping[str, Any] | None = None,
                   sdk_plugin: BasePlugin | type[BasePlugin] | None = None,
                   class_name: str | None = None,
                   **manifest_kwargs: Any) -> type[LangBotRunnerAdapter]:
    """A zero-argument :class:`protocol.runner.Runner` subclass for an SDK runner.

    This is what a ``runnerhost.runners`` entry point should name: the
    registry reads ``cls.manifest`` and instantiates ``cls()``.
    ``manifest_kwargs`` go to :func:`manifest_from_sdk` when ``manifest`` is
    not given (``author=``, ``plugin=``, ``runner=``, ``capabilities=``…).
    """
    if manifest is None:
        manifest = manifest_from_sdk(sdk_runner_cls=sdk_runner_cls, **manifest_kwargs)
    elif manifest_kwargs:
        raise TypeError("pass either a manifest or manifest_from_sdk keyword arguments, not both")
    name = class_name or f"{sdk_runner_cls.__name__}HostRunner"
    frozen_config = dict(plugin_config or {})

    def __init__(self) -> None:
        LangBotRunnerAdapter.__init__(self, sdk_runner_cls, manifest,
                                      plugin_config=frozen_config, sdk_plugin=sdk_plugin)

    caller = sys._getframe(1).f_globals.get("__name__", __name__)
    return type(name, (LangBotRunnerAdapter,), {
        "manifest": manifest, "sdk_runner_cls": sdk_runner_cls, "__init__": __init__,
        "__module__": caller, "__qualname__": name,
        "__doc__": f"RunnerHost runner {manifest.id} hosting LangBot SDK runner "
                   f"{sdk_runner_cls.__module__}.{sdk_runner_cls.__qualname__}.",
    })


def load_plugin_runner(plugin_dir: str | Path, runner_name: str | None = None, *,
                       load_plugin_class: bool = True, class_name: str | None = None,
                       **manifest_overrides: Any) -> type[LangBotRunnerAdapter]:
    """Load a Runner component from a LangBot plugin directory, unmodified.

    Reads ``manifest.yaml`` (author, name, version, ``spec.components.Runner``
    dirs, plugin config defaults, the plugin class) and the Runner component
    YAML named ``runner_name`` (or the only one). The plugin's modules are
    imported under a private package name per directory, so two plugins that
    both ship ``components/runner/default.py`` do not collide.
    """
    root = Path(plugin_dir).resolve()
    plugin_manifest = _read_yaml(root / "manifest.yaml")
    meta = plugin_manifest.get("metadata") or {}
    spec = plugin_manifest.get("spec") or {}
    author, plugin_name = meta.get("author"), meta.get("name")
    if not author or not plugin_name:
        raise ValueError(f"{root / 'manifest.yaml'}: metadata.author and metadata.name are required")

    dirs = [entry.get("path") for entry in
            ((spec.get("components") or {}).get("Runner") or {}).get("fromDirs") or []]
    found: list[tuple[Path, dict[str, Any]]] = []
    for rel in dirs:
        folder = _inside(root, root / str(rel))
        for path in sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]):
            component = _read_yaml(path)
            if component.get("kind") != "Runner":
                continue
            if runner_name is None or (component.get("metadata") or {}).get("name") == runner_name:
                found.append((path, component))
    if len(found) != 1:
        names = [c.get("metadata", {}).get("name") for _, c in found]
        raise ValueError(f"{root}: expected exactly one Runner component"
                         f"{'' if runner_name is None else f' named {runner_name!r}'}, found {names}")
    path, component = found[0]

    package = _plugin_package(root)
    sdk_cls = _load_attr(root, package, path.parent, (component.get("execution") or {}).get("python"))
    plugin_cls = None
    if load_plugin_class and (plugin_manifest.get("execution") or {}).get("python"):
        plugin_cls = _load_attr(root, package, root, plugin_manifest["execution"]["python"])
    plugin_config = {item["name"]: item.get("default") for item in spec.get("config") or []
                     if isinstance(item, dict) and item.get("name")}
    manifest = manifest_from_sdk(component, sdk_runner_cls=sdk_cls, author=author, plugin=plugin_name,
                                 version=manifest_overrides.pop("version", None) or meta.get("version"),
                                 **manifest_overrides)
    return langbot_runner(sdk_cls, manifest, plugin_config=plugin_config, sdk_plugin=plugin_cls,
                          class_name=class_name)


def _read_yaml(path: Path) -> dict[str, Any]:
    """Bad files raise ValueError, which discovery turns into "skip with a warning"."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a YAML mapping")
    return data


def _inside(root: Path, path: Path) -> Path:
    resolved = path.resolve()
    if resolved != root and root not in resolved.parents:
        raise ValueError(f"{path} escapes the plugin directory {root}")
    return resolved


def _plugin_package(root: Path) -> str:
    name = "_langbot_plugin_" + hashlib.sha1(str(root).encode()).hexdigest()[:12]
    if name not in sys.modules:
        spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
        spec.submodule_search_locations = [str(root)]
        sys.modules[name] = importlib.util.module_from_spec(spec)
    return name


def _load_attr(root: Path, package: str, base: Path, python: Mapping[str, Any] | None) -> Any:
    if not python or not python.get("path") or not python.get("attr"):
        raise ValueError("execution.python.path and execution.python.attr are required")
    target = _inside(root, base / str(python["path"]))
    rel = target.relative_to(root).with_suffix("") if target.suffix == ".py" else target.relative_to(root)
    module_name = ".".join([package, *rel.parts])
    # Plugins also import their own top-level modules absolutely (``from pkg import x``).
    added = str(root) not in sys.path
    if added:
        sys.path.insert(0, str(root))
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise
    except Exception as exc:  # plugin code failing at import: let discovery skip it
        raise ImportError(f"importing {target} failed: {type(exc).__name__}: {exc}") from exc
    finally:
        if added:
            with contextlib.suppress(ValueError):
                sys.path.remove(str(root))
    try:
        return getattr(module, str(python["attr"]))
    except AttributeError:
        raise ImportError(f"{target} has no attribute {python['attr']!r}") from None
