"""Derive our :class:`RunnerManifest` from a LangBot SDK runner's manifest.

Accepted sources (explicit keyword arguments override what a source says):

* the SDK's ``RunnerManifest`` entity (or its JSON) — what ``LIST_RUNNERS``
  returns, id already ``plugin:<author>/<plugin>/<runner>``;
* a Runner *component* manifest (the ``components/.../<name>.yaml`` dict with
  ``apiVersion/kind/metadata/spec``) plus ``author`` and ``plugin``;
* nothing: ``author``, ``plugin``, ``runner`` and friends given explicitly.

Mapping: capabilities and permissions carry over key for key; what only the
SDK has is dropped (capability/permission ``interactions``); the model operation
``count_tokens`` is kept (LangBot's local-agent counts tokens on every run). The SDK has no manifest permissions for host-owned state,
steering or the run ledger (LangBot gates those by binding policy alone), so an
SDK runner's upper bound gets ``state: [read, write]``, ``run_ledger: [get,
list, events_page]`` and ``steering: [pull]`` when it declares the
``steering`` capability — unless the source or ``permissions`` names those
keys. ``extra_permissions`` is unioned on top. The binding still intersects.
Unknown keys are rejected (our manifest is strict).

This module does not import ``langbot_plugin``; SDK objects are read duck-typed.
"""
from __future__ import annotations

from typing import Any, Mapping

from pydantic import BaseModel

from protocol.logs import get_logger
from protocol.manifest import Capabilities, ConfigField, Permissions, RunnerManifest

log = get_logger(__name__)

#: SDK-only declarations with no meaning on RunnerHost.
SDK_ONLY_CAPABILITIES = frozenset({"interactions"})
SDK_ONLY_PERMISSIONS = frozenset({"interactions"})
SDK_ONLY_OPERATIONS: dict[str, frozenset[str]] = {}

#: Host-owned APIs the SDK manifest cannot express; defaults for SDK runners.
HOST_ONLY_PERMISSION_DEFAULTS: dict[str, list[str]] = {
    "state": ["read", "write"],
    "run_ledger": ["get", "list", "events_page"],
}


def _as_dict(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"expected a mapping or model, got {type(value).__name__}")


def _text(value: Any) -> str | None:
    """A label/description: str, or an i18n dict (en_US preferred)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, BaseModel):
        value = value.model_dump()
    if isinstance(value, Mapping):
        if value.get("en_US"):
            return str(value["en_US"])
        return next((str(v) for v in value.values() if v), None)
    return str(value)


def map_capabilities(sdk_caps: Any) -> Capabilities:
    caps = {k: v for k, v in _as_dict(sdk_caps).items() if k not in SDK_ONLY_CAPABILITIES}
    return Capabilities.model_validate(caps)


def map_permissions(sdk_perms: Any, *, steering: bool = False,
                    extra: Any = None) -> Permissions:
    perms: dict[str, Any] = {}
    for key, ops in _as_dict(sdk_perms).items():
        if key in SDK_ONLY_PERMISSIONS:
            continue
        if isinstance(ops, list):
            dropped = SDK_ONLY_OPERATIONS.get(key, frozenset())
            ops = [op for op in ops if op not in dropped]
        perms[key] = ops
    for key, default in HOST_ONLY_PERMISSION_DEFAULTS.items():
        perms.setdefault(key, list(default))
    if steering:
        perms.setdefault("steering", ["pull"])
    for key, ops in _as_dict(extra).items():
        if isinstance(ops, list):
            perms[key] = sorted(set(perms.get(key) or []) | set(ops))
        else:
            perms[key] = ops
    return Permissions.model_validate(perms)


def _is_component_manifest(data: Mapping[str, Any]) -> bool:
    return {"apiVersion", "kind", "metadata", "spec"} <= set(data)


def manifest_from_sdk(
    source: Any = None,
    *,
    sdk_runner_cls: type | None = None,
    author: str | None = None,
    plugin: str | None = None,
    runner: str | None = None,
    label: Any = None,
    description: Any = None,
    version: str | None = None,
    capabilities: Any = None,
    permissions: Any = None,
    extra_permissions: Any = None,
    config_schema: list[Any] | None = None,
) -> RunnerManifest:
    """Build a RunnerHost manifest for an SDK runner (see the module doc)."""
    runner_id: str | None = None
    src_label = src_desc = src_version = None
    src_caps: Any = None
    src_perms: Any = None
    src_config: Any = None
    if source is not None:
        data = _as_dict(source)
        if _is_component_manifest(data):
            if data.get("kind") != "Runner":
                raise ValueError(f"component kind {data.get('kind')!r} is not a Runner")
            meta, spec = data.get("metadata") or {}, data.get("spec") or {}
            runner = runner or meta.get("name")
            src_label, src_desc = meta.get("label"), meta.get("description")
            src_version = meta.get("version")
            src_caps, src_perms, src_config = spec.get("capabilities"), spec.get("permissions"), spec.get("config")
        else:  # the SDK RunnerManifest entity
            runner_id = data.get("id")
            meta = data.get("metadata") or {}
            author = author or meta.get("plugin_author")
            plugin = plugin or meta.get("plugin_name")
            runner = runner or data.get("name") or meta.get("runner_name")
            src_label, src_desc = data.get("label"), data.get("description")
            src_version = meta.get("plugin_version") or meta.get("version")
            src_caps, src_perms, src_config = (data.get("capabilities"), data.get("permissions"),
                                               data.get("config_schema"))

    if author and plugin and runner:
        derived = f"plugin:{author}/{plugin}/{runner}"
        if runner_id and runner_id != derived:
            log.info("manifest id %s overridden by explicit names: %s", runner_id, derived)
        runner_id = derived
    if not runner_id:
        raise ValueError("cannot derive a runner id: give author, plugin and runner "
                         "(id format plugin:<author>/<plugin>/<runner>)")

    caps = map_capabilities(capabilities if capabilities is not None else src_caps)
    perms = map_permissions(permissions if permissions is not None else src_perms,
                            steering=caps.steering, extra=extra_permissions)

    schema = config_schema if config_schema is not None else src_config
    if not schema and sdk_runner_cls is not None and hasattr(sdk_runner_cls, "get_config_schema"):
        schema = sdk_runner_cls.get_config_schema()
    fields = [ConfigField.model_validate(_as_dict(item)) for item in (schema or [])]

    return RunnerManifest(
        id=runner_id,
        label=_text(label if label is not None else src_label) or (runner or runner_id),
        description=_text(description if description is not None else src_desc) or "",
        version=str(version or src_version or "0.0.0"),
        capabilities=caps,
        permissions=perms,
        config_schema=fields,
    )
