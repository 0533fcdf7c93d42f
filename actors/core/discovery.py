"""Runner discovery: built-ins plus the ``runnerhost.runners`` entry-point group.

One bad manifest logs a warning and is skipped; the rest still load.
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
    candidates: list[tuple[str, str]] = [(t, "builtin") for t in BUILTIN_RUNNERS.values()]
    candidates += [(t, "builtin") for t in (extra or {}).values()]
    if include_entry_points:
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            candidates.append((ep.value, "entry_point"))
    specs: dict[str, RunnerSpec] = {}
    warnings: list[str] = []
    for target, source in candidates:
        try:
            manifest = _manifest_of(load_target(target))
        except (ImportError, AttributeError, TypeError, ValueError, ValidationError) as exc:
            msg = f"skipping runner {target}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
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
