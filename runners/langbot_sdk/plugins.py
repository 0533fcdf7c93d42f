"""LangBot plugin directories loaded by configuration (``[[runners.langbot_plugins]]``).

A configured plugin directory becomes one registry entry per Runner component, keyed by
its runner id and pointing at a *plugin target*::

    langbot-plugin:<absolute plugin dir>#plugin:<author>/<plugin>/<runner>

:func:`load_plugin_target` turns a target back into the runner class, in any process —
the registry, a RunnerWorker, a session actor, on any Ray node — with no package
install and no ``PYTHONPATH`` change. The directory reaches other nodes through the Ray
job's runtime env (``py_modules``, see :func:`runtime_env_for`): Ray uploads it once and
unpacks it on each node under a directory named like the plugin directory, which it puts
on ``sys.path``. :func:`resolve_plugin_dir` therefore uses the configured path when it
exists on this node, else the copy of the same name on ``sys.path``; the loaded runner's id
must be the one the target names, so a different plugin that happens to share the
directory name is refused.

This module does not import ``langbot_plugin`` until a target is loaded.
"""
from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from typing import Any, Iterable

TARGET_PREFIX = "langbot-plugin:"
_LOADED: dict[str, type] = {}
_LOCK = threading.Lock()


def is_plugin_target(target: str) -> bool:
    return isinstance(target, str) and target.startswith(TARGET_PREFIX)


def plugin_target(plugin_dir: str | os.PathLike[str], runner_id: str) -> str:
    return f"{TARGET_PREFIX}{Path(plugin_dir).resolve()}#{runner_id}"


def parse_plugin_target(target: str) -> tuple[str, str, str]:
    """``(plugin dir, runner id, runner name)``."""
    if not is_plugin_target(target):
        raise ValueError(f"{target!r} is not a LangBot plugin target")
    path, sep, runner_id = target[len(TARGET_PREFIX):].rpartition("#")
    parts = runner_id.removeprefix("plugin:").split("/")
    if not sep or not path or not runner_id.startswith("plugin:") or len(parts) != 3 or not all(parts):
        raise ValueError(f"{target!r}: expected {TARGET_PREFIX}<plugin dir>#plugin:<author>/<plugin>/<runner>")
    return path, runner_id, parts[2]


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a YAML mapping")
    return data


def plugin_identity(plugin_dir: str | os.PathLike[str]) -> tuple[str, str]:
    """``(author, name)`` of a plugin directory's ``manifest.yaml``."""
    meta = _read_yaml(Path(plugin_dir) / "manifest.yaml").get("metadata") or {}
    author, name = meta.get("author"), meta.get("name")
    if not isinstance(author, str) or not author or not isinstance(name, str) or not name:
        raise ValueError(f"{plugin_dir}/manifest.yaml: metadata.author and metadata.name are required")
    return author, name


def runner_names(plugin_dir: str | os.PathLike[str]) -> list[str]:
    """The names of the Runner components the plugin declares (``spec.components.Runner.fromDirs``)."""
    root = Path(plugin_dir).resolve()
    spec = _read_yaml(root / "manifest.yaml").get("spec") or {}
    names: list[str] = []
    for entry in ((spec.get("components") or {}).get("Runner") or {}).get("fromDirs") or []:
        folder = (root / str((entry or {}).get("path") or "")).resolve()
        if folder != root and root not in folder.parents:
            raise ValueError(f"{folder} escapes the plugin directory {root}")
        for path in sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]):
            component = _read_yaml(path)
            name = (component.get("metadata") or {}).get("name")
            if component.get("kind") == "Runner" and isinstance(name, str) and name:
                names.append(name)
    return names


def configured_runners(plugin_dir: str | os.PathLike[str], runners: Iterable[str] | None = None) -> dict[str, str]:
    """``{runner id: plugin target}`` for a configured plugin directory (``runners``: names to
    load, default all). Raises ``ValueError`` for a missing directory or an unknown runner name."""
    root = Path(plugin_dir).expanduser().resolve()
    if not (root / "manifest.yaml").is_file():
        raise ValueError(f"{root} is not a LangBot plugin directory (no manifest.yaml)")
    author, name = plugin_identity(root)
    available = runner_names(root)
    wanted = list(runners) if runners is not None else available
    unknown = [r for r in wanted if r not in available]
    if unknown:
        raise ValueError(f"{root}: no Runner component named {unknown} (it has {available})")
    return {f"plugin:{author}/{name}/{r}": plugin_target(root, f"plugin:{author}/{name}/{r}") for r in wanted}


def resolve_plugin_dir(path: str, search: Iterable[str] | None = None) -> Path:
    """The plugin directory on this node: ``path`` itself, else the copy Ray's ``py_modules``
    unpacked under a ``sys.path`` entry (same directory name, same author and name)."""
    configured = Path(path)
    if (configured / "manifest.yaml").is_file():
        return configured
    for entry in (sys.path if search is None else search):
        candidate = Path(entry or ".") / configured.name
        if (candidate / "manifest.yaml").is_file():
            return candidate
    raise ValueError(f"LangBot plugin directory {path} is not on this node: ship it with the Ray job's "
                     "runtime env (runnerhost serve does: py_modules), or put it at the same path on every node")


def load_plugin_target(target: str) -> type:
    """The runner class of a plugin target, loaded once per process."""
    with _LOCK:
        cls = _LOADED.get(target)
        if cls is not None:
            return cls
        path, runner_id, runner = parse_plugin_target(target)
        from .adapter import load_plugin_runner

        cls = load_plugin_runner(resolve_plugin_dir(path), runner)
        if cls.manifest.id != runner_id:
            raise ValueError(f"{target}: the plugin found there is {cls.manifest.id}, not {runner_id}")
        _LOADED[target] = cls
        return cls


def runtime_env_for(plugin_dirs: Iterable[str | os.PathLike[str]],
                    base: dict[str, Any] | None = None) -> dict[str, Any]:
    """A Ray runtime env that ships ``plugin_dirs`` to every node (``py_modules``), merged into ``base``."""
    env = dict(base or {})
    dirs = [str(Path(d).expanduser().resolve()) for d in plugin_dirs]
    if dirs:
        env["py_modules"] = list(dict.fromkeys([*(env.get("py_modules") or []), *dirs]))
    return env
