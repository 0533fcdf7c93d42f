"""Artifacts: inputs, tool results and files as metadata row + bytes (SPEC §7).

Invariants:

* bytes up to ``inline_limit`` live in the row (storage ``db``); larger ones
  in a file under ``root_dir`` (storage ``file``, path stored relative to the
  root). Every file path — registered or read — is realpath-checked to stay
  inside the root, so ``..`` and symlinks cannot escape it (→ ``invalid_argument``).
* registration is idempotent on ``artifact_id``: the same id with the same
  sha256 returns the stored metadata; with other bytes → ``invalid_argument``.
* reads: an expired artifact is ``not_found``; every read names the reader's
  :class:`~protocol.read_scope.ReadScope`, and an artifact outside it (another
  conversation's, or not the reading run's own when it has no conversation)
  is ``unauthorized``. Only the host's own scope skips the ownership check.
* file writes happen before the row is committed; a rolled-back registration
  may leave an unreferenced file (harmless), and a committed row whose file
  vanished reads as ``not_found``.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import os
import re
import tempfile
import uuid
from pathlib import Path
from typing import Any, Mapping

from sqlalchemy import delete, select
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncSession

from protocol.errors import invalid_argument, not_found, payload_too_large
from protocol.pages import ArtifactMetadata, ArtifactReadResult
from protocol.read_scope import ReadScope

from ._common import (check_limit, check_optional_text, check_row, check_text, epoch, insert_rows, now,
                      oldest_first, require_in_scope)
from .models import AgentArtifact

DEFAULT_INLINE_LIMIT = 1 << 20
#: Largest single read (whole or range); read bigger artifacts in ranges.
MAX_READ_BYTES = 16 << 20
_ARTIFACT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
_CHUNK = 1 << 20

_T = AgentArtifact.__table__
_META = [c for c in _T.c if c.name != "content"]


class ArtifactStore:
    """Repository over ``agent_artifact`` plus the file tree under ``root_dir``."""

    def __init__(self, session: AsyncSession, root_dir: str | os.PathLike[str], *,
                 inline_limit: int = DEFAULT_INLINE_LIMIT) -> None:
        self._session = session
        self._root = Path(os.path.realpath(root_dir))
        self._inline_limit = inline_limit

    # -- registration ---------------------------------------------------------------
    async def register_bytes(self, data: bytes, *, artifact_type: str,
                             mime_type: str | None = None, name: str | None = None,
                             conversation_id: str | None = None, run_id: str | None = None,
                             runner_id: str | None = None, expires_at: float | None = None,
                             metadata: dict[str, Any] | None = None,
                             artifact_id: str | None = None) -> ArtifactMetadata:
        """Store ``data`` inline or as a file under the root, by size."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise invalid_argument("artifact data must be bytes")
        data = bytes(data)
        artifact_id = _check_id(artifact_id)
        digest = hashlib.sha256(data).hexdigest()
        if (stored := await self._existing(artifact_id, digest)) is not None:
            return stored
        row = _base_row(artifact_id, artifact_type, mime_type, name, conversation_id, run_id,
                        runner_id, expires_at, metadata, size=len(data), digest=digest)
        if len(data) <= self._inline_limit:
            row.update(storage="db", content=data, file_path=None)
        else:
            relative = f"objects/{artifact_id}.{digest[:16]}"
            await asyncio.to_thread(_write_atomic, self._root / relative, data)
            row.update(storage="file", content=None, file_path=relative)
        return await self._insert(row)

    async def register_file(self, path: str | os.PathLike[str], *, artifact_type: str,
                            mime_type: str | None = None, name: str | None = None,
                            conversation_id: str | None = None, run_id: str | None = None,
                            runner_id: str | None = None, expires_at: float | None = None,
                            metadata: dict[str, Any] | None = None,
                            artifact_id: str | None = None) -> ArtifactMetadata:
        """Register an existing regular file inside the root (relative paths are
        taken relative to the root) without copying it."""
        real = self._inside_root(path)
        if not real.is_file():
            raise invalid_argument("artifact path is not a regular file")
        artifact_id = _check_id(artifact_id)
        size, digest = await asyncio.to_thread(_hash_file, real)
        if (stored := await self._existing(artifact_id, digest)) is not None:
            return stored
        row = _base_row(artifact_id, artifact_type, mime_type, name or real.name, conversation_id,
                        run_id, runner_id, expires_at, metadata, size=size, digest=digest)
        row.update(storage="file", content=None, file_path=real.relative_to(self._root).as_posix())
        return await self._insert(row)

    async def register_result(self, *, run_id: str | None, runner_id: str | None,
                              conversation_id: str | None,
                              data: Mapping[str, Any]) -> ArtifactMetadata:
        """Store the payload of an ``artifact.created`` result (SPEC §5).

        ``content_base64`` is decoded and registered, owned by the run; a declared
        ``size_bytes``/``sha256`` must match it. Without content the payload must
        name an already stored ``artifact_id``. Inline content is capped at the
        store's ``inline_limit`` (→ ``payload_too_large``).
        """
        if not isinstance(data, Mapping):
            raise invalid_argument("artifact.created data must be an object")
        encoded = data.get("content_base64")
        if encoded is None:
            artifact_id = data.get("artifact_id")
            if not isinstance(artifact_id, str):
                raise invalid_argument("artifact.created needs content_base64 or a stored artifact_id")
            owner = (ReadScope(conversation_id=conversation_id, run_id=run_id)
                     if conversation_id or run_id else ReadScope.host())
            return await self.metadata(artifact_id, scope=owner)
        if not isinstance(encoded, str) or len(encoded) > (self._inline_limit // 3 + 1) * 4:
            raise payload_too_large("inline artifact content is too large", limit=self._inline_limit)
        try:
            content = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise invalid_argument("content_base64 is not valid base64") from None
        if len(content) > self._inline_limit:
            raise payload_too_large("inline artifact content is too large", limit=self._inline_limit)
        if data.get("size_bytes") not in (None, len(content)):
            raise invalid_argument("size_bytes does not match the content")
        if data.get("sha256") not in (None, hashlib.sha256(content).hexdigest()):
            raise invalid_argument("sha256 does not match the content")
        metadata = data.get("metadata")
        return await self.register_bytes(
            content, artifact_type=data.get("artifact_type"), mime_type=data.get("mime_type"),
            name=data.get("name"), conversation_id=conversation_id, run_id=run_id,
            runner_id=runner_id, metadata=metadata if isinstance(metadata, dict) else None,
            artifact_id=data.get("artifact_id"))

    # -- reads ----------------------------------------------------------------
    async def metadata(self, artifact_id: str, *, scope: ReadScope) -> ArtifactMetadata:
        return _metadata(await self._load(artifact_id, scope, with_content=False))

    async def read(self, artifact_id: str, *, scope: ReadScope) -> ArtifactReadResult:
        """The whole artifact; over :data:`MAX_READ_BYTES` → ``payload_too_large``."""
        row = await self._load(artifact_id, scope, with_content=True)
        if row.size_bytes > MAX_READ_BYTES:
            raise payload_too_large("artifact too large for one read; use ranges",
                                    size=row.size_bytes, limit=MAX_READ_BYTES)
        return await self._read(row, 0, row.size_bytes)

    async def read_range(self, artifact_id: str, offset: int, length: int, *,
                         scope: ReadScope) -> ArtifactReadResult:
        """``length`` bytes from ``offset`` (clipped at the end). ``offset`` must be
        in ``0..size`` and ``length`` in ``1..MAX_READ_BYTES``, else ``invalid_argument``."""
        for field, value, low in (("offset", offset, 0), ("length", length, 1)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise invalid_argument(f"{field} must be an integer ≥ {low}", **{field: repr(value)[:32]})
        if length > MAX_READ_BYTES:
            raise invalid_argument(f"length must be ≤ {MAX_READ_BYTES}", length=length)
        row = await self._load(artifact_id, scope, with_content=True)
        if offset > row.size_bytes:
            raise invalid_argument("offset beyond the end of the artifact",
                                   offset=offset, size=row.size_bytes)
        return await self._read(row, offset, min(length, row.size_bytes - offset))

    async def list_for_run(self, run_id: str, *, limit: int = 100) -> list[ArtifactMetadata]:
        """Unexpired artifacts a run owns, oldest first (at most ``limit``)."""
        check_text(run_id, "run_id", max_len=128)
        check_limit(limit)
        rows = (await self._session.execute(
            select(*_META).where(_T.c.run_id == run_id)
            .where((_T.c.expires_at.is_(None)) | (_T.c.expires_at > now()))
            .order_by(_T.c.created_at, _T.c.artifact_id).limit(limit))).all()
        return [_metadata(r) for r in rows]

    # -- maintenance -------------------------------------------------------------
    async def cleanup_expired(self, *, limit: int | None = None) -> int:
        """Delete expired rows (at most ``limit``) and their files; returns how many artifacts went."""
        condition = oldest_first(_T, _T.c.expires_at <= now(), limit)
        rows = (await self._session.execute(
            delete(_T).where(condition).returning(_T.c.storage, _T.c.file_path))).all()
        paths = [r.file_path for r in rows if r.storage == "file"]
        await asyncio.to_thread(self._unlink_all, paths)
        return len(rows)

    # -- internals ------------------------------------------------------------
    def _inside_root(self, path: str | os.PathLike[str]) -> Path:
        """Resolve ``path`` (symlinks included) and require it strictly inside the root."""
        try:
            real = Path(os.path.realpath(self._root / Path(path)))
        except (TypeError, ValueError):
            raise invalid_argument("invalid artifact path") from None
        if real == self._root or self._root not in real.parents:
            raise invalid_argument("artifact path escapes the artifact root")
        return real

    def _unlink_all(self, relative_paths: list[str]) -> None:
        for relative in relative_paths:
            try:
                self._inside_root(relative).unlink(missing_ok=True)
            except Exception:  # a vanished or foreign path must not fail the cleanup
                continue

    async def _existing(self, artifact_id: str, digest: str) -> ArtifactMetadata | None:
        row = (await self._session.execute(
            select(*_META).where(_T.c.artifact_id == artifact_id))).one_or_none()
        if row is None:
            return None
        if row.sha256 != digest:
            raise invalid_argument("artifact_id already registered with different content",
                                   artifact_id=artifact_id)
        return _metadata(row)

    async def _insert(self, row: dict[str, Any]) -> ArtifactMetadata:
        _, rows = await insert_rows(self._session, _T, [row], conflict=("artifact_id",),
                                    returning=_META)
        if rows:
            return _metadata(rows[0])
        stored = await self._existing(row["artifact_id"], row["sha256"])  # lost a race
        assert stored is not None
        return stored

    async def _load(self, artifact_id: str, scope: ReadScope, *, with_content: bool) -> Row[Any]:
        columns = list(_T.c) if with_content else _META
        row = (await self._session.execute(
            select(*columns).where(_T.c.artifact_id == _check_id(artifact_id)))).one_or_none()
        if row is None or (row.expires_at is not None and row.expires_at <= now()):
            raise not_found("artifact not found", artifact_id=artifact_id)
        return require_in_scope(row, scope, "artifact", artifact_id=artifact_id)

    async def _read(self, row: Row[Any], offset: int, length: int) -> ArtifactReadResult:
        if row.storage == "db":
            chunk = row.content[offset:offset + length]
        else:
            path = self._inside_root(row.file_path)
            try:
                chunk = await asyncio.to_thread(_read_file, path, offset, length)
            except FileNotFoundError:
                raise not_found("artifact content missing", artifact_id=row.artifact_id) from None
        return ArtifactReadResult(
            artifact_id=row.artifact_id, offset=offset, length=len(chunk), total_size=row.size_bytes,
            eof=offset + len(chunk) >= row.size_bytes, mime_type=row.mime_type,
            content_base64=base64.b64encode(chunk).decode("ascii"))


def _check_id(artifact_id: str | None) -> str:
    """A valid artifact id; ``None`` draws a new one."""
    if artifact_id is None:
        return f"art_{uuid.uuid4().hex}"
    if not isinstance(artifact_id, str) or not _ARTIFACT_ID.fullmatch(artifact_id):
        raise invalid_argument("artifact_id must match [A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
    return artifact_id


def _base_row(artifact_id: str, artifact_type: str, mime_type: str | None, name: str | None,
              conversation_id: str | None, run_id: str | None, runner_id: str | None,
              expires_at: float | None, metadata: dict[str, Any] | None, *, size: int,
              digest: str) -> dict[str, Any]:
    check_text(artifact_type, "artifact_type", max_len=64)
    check_optional_text(mime_type, "mime_type", max_len=128)
    check_optional_text(name, "name", max_len=512)
    if expires_at is not None and (isinstance(expires_at, bool)
                                   or not isinstance(expires_at, (int, float))):
        raise invalid_argument("expires_at must be epoch seconds")
    row = {"artifact_id": artifact_id, "artifact_type": artifact_type, "mime_type": mime_type,
           "name": name, "size_bytes": size, "sha256": digest, "conversation_id": conversation_id,
           "run_id": run_id, "runner_id": runner_id, "created_at": now(),
           "expires_at": None if expires_at is None else float(expires_at),
           "metadata_json": dict(metadata or {})}
    check_row(_T, row)  # before a file is written
    return row


def _metadata(row: Row[Any]) -> ArtifactMetadata:
    return ArtifactMetadata(
        artifact_id=row.artifact_id, artifact_type=row.artifact_type, mime_type=row.mime_type,
        name=row.name, size_bytes=row.size_bytes, sha256=row.sha256, storage=row.storage,
        conversation_id=row.conversation_id, run_id=row.run_id, runner_id=row.runner_id,
        created_at=epoch(row.created_at), expires_at=epoch(row.expires_at),
        metadata=row.metadata_json or {})


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _hash_file(path: Path) -> tuple[int, str]:
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as handle:
        while block := handle.read(_CHUNK):
            digest.update(block)
            size += len(block)
    return size, digest.hexdigest()


def _read_file(path: Path, offset: int, length: int) -> bytes:
    with path.open("rb") as handle:
        handle.seek(offset)
        return handle.read(length)
