"""Runner discovery: built-ins, configured runners and the ``runnerhost.runners`` entry-point group.

Configured runners (``[host] extra_runners`` and ``[[runners.langbot_plugins]]``) are
``{runner id: target}``; the key must be the id the runner's manifest declares, and they
are labelled ``source = "config"``. A target is ``module:Class``, or a LangBot plugin
target (``langbot-plugin:<dir>#<runner id>``, :mod:`runners.langbot_sdk.plugins`) that any
process on any node can load. One bad manifest, target or key logs a warning and is
skipped; the rest still load.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from pydantic import ValidationError

from protocol.logs import get_logger
from protocol.manifest import RunnerDescriptor, RunnerManifest
from protocol.runner import Runner
from runners import BUILTIN_RUNNERS, ENTRY_POINT_GROUP

log = get_logger(__name__)


@dataclass(frozen=True)
class RunnerSpec:
    descriptor: RunnerDescriptor
    target: str  # "module:Class", importable inside a runner worker


def load_target(target: str) -> type[Runner]:
    from runners.langbot_sdk.plugins import is_plugin_target, load_plugin_target

    if is_plugin_target(target):
        obj = load_plugin_target(target)
        if not (isinstance(obj, type) and issubclass(obj, Runner)):
            raise TypeError(f"{target} is not a protocol.runner.Runner subclass")
        return obj
    module_name, _, attr = target.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    if not (isinstance(obj, type) and issubclass(obj, Runner)):
        raise TypeError(f"{target} is not a protocol.runner.Runner subclass")
    return obj


def _manifest_of(cls: type[Runner]) -> RunnerManifest:
    manifest = getattr(cls, "manifest", None)
    if isinstance(manifest, dict):
        manifest = RunnerManifest.model_validate(manifest)
    if not isinstance(manifest, RunnerManifest):
        raise TypeError("runner class has no RunnerManifest `manifest`")
    return manifest


def discover(extra: dict[str, str] | None = None, *, include_entry_points: bool = True) -> tuple[dict[str, RunnerSpec], list[str]]:
    """Return ``(specs by runner id, warnings)``."""
    candidates: list[tuple[str, str, str | None]] = [(t, "builtin", None) for t in BUILTIN_RUNNERS.values()]
    candidates += [(t, "config", key) for key, t in (extra or {}).items()]
    if include_entry_points:
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            candidates.append((ep.value, "entry_point", None))
    specs: dict[str, RunnerSpec] = {}
    warnings: list[str] = []
    for target, source, key in candidates:
        try:
            manifest = _manifest_of(load_target(target))
        except (ImportError, AttributeError, TypeError, ValueError, ValidationError) as exc:
            msg = f"skipping runner {target}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            log.warning(msg)
            warnings.append(msg)
            continue
        if key is not None and key != manifest.id:
            msg = (f"skipping runner {target}: configured as {key!r} but its manifest id is {manifest.id!r} "
                   "(the key must be the runner's id)")
            log.warning(msg)
            warnings.append(msg)
            continue
        if manifest.id in specs:
            msg = f"skipping runner {target}: duplicate id {manifest.id}"
            log.warning(msg)
            warnings.append(msg)
            continue
        specs[manifest.id] = RunnerSpec(RunnerDescriptor.from_manifest(manifest, source), target)
    return specs, warnings
