"""Plugin / workspace key-value storage for runners (SPEC §6 ``storage_*``).

Keys live in ``(area, namespace)``: ``area`` is ``plugin`` or ``workspace``;
the namespace is chosen by the caller (e.g. the plugin's ``author/name`` or the
workspace id). Values are JSON, at most 256 KiB encoded; ``set`` is an upsert.
"""
from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from protocol.errors import invalid_argument

from ._common import check_limit, check_storable, check_text, insert_rows, json_value, now
from .models import KV_AREAS, AgentKv

_T = AgentKv.__table__
MAX_KEYS = 1000


class KvStore:
    """Repository over ``agent_kv``."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def get(self, area: str, namespace: str, key: str) -> Any:
        """The stored value, ``None`` when absent."""
        return (await self._session.execute(
            select(_T.c.value_json).where(*_where(area, namespace, key)))).scalar_one_or_none()

    async def set(self, area: str, namespace: str, key: str, value: Any) -> None:
        _where(area, namespace, key)
        value = json_value(value, field="storage value")
        await insert_rows(self._session, _T, [{
            "area": area, "namespace": namespace, "key": key, "value_json": value,
            "updated_at": now()}], conflict=("area", "namespace", "key"),
            update=lambda excluded: {"value_json": excluded.value_json,
                                     "updated_at": excluded.updated_at})

    async def delete(self, area: str, namespace: str, key: str) -> bool:
        """``True`` when a value was deleted."""
        result = await self._session.execute(delete(_T).where(*_where(area, namespace, key)))
        return bool(result.rowcount)

    async def keys(self, area: str, namespace: str, prefix: str = "",
                   limit: int = MAX_KEYS) -> list[str]:
        """Keys starting with ``prefix`` (case-sensitive), sorted, at most ``limit``."""
        _check_area(area, namespace)
        check_limit(limit, MAX_KEYS)
        if not isinstance(prefix, str):
            raise invalid_argument("prefix must be a string")
        check_storable(prefix, "prefix", 512)
        query = (select(_T.c.key).where(_T.c.area == area, _T.c.namespace == namespace)
                 .order_by(_T.c.key).limit(limit))
        if prefix:
            query = query.where(_T.c.key.startswith(prefix, autoescape=True))
        return list((await self._session.execute(query)).scalars())


def _check_area(area: str, namespace: str) -> None:
    if area not in KV_AREAS:
        raise invalid_argument(f"unknown storage area {area!r}", allowed=list(KV_AREAS))
    check_text(namespace, "namespace")


def _where(area: str, namespace: str, key: str) -> tuple[Any, ...]:
    _check_area(area, namespace)
    check_text(key, "key", max_len=512)
    return _T.c.area == area, _T.c.namespace == namespace, _T.c.key == key
