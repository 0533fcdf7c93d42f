"""Artifacts: inline vs file storage, root confinement, ownership, expiry, ranges, cleanup."""
from __future__ import annotations

import base64
import hashlib
import os
import time
from pathlib import Path

import pytest

from protocol.errors import ErrorCode
from protocol.read_scope import ReadScope
from store.artifacts import ArtifactStore

INLINE = 1024

HOST = ReadScope.host()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "artifacts"
    path.mkdir()
    return path


def _bytes(result) -> bytes:
    return base64.b64decode(result.content_base64)


async def test_small_inline_large_file_and_idempotent(db, root, uid):
    small, large = b"hello", os.urandom(3 * INLINE + 7)
    async with db.transaction() as s:
        store = ArtifactStore(s, root, inline_limit=INLINE)
        a = await store.register_bytes(small, artifact_type="file", mime_type="text/plain",
                                       conversation_id="c1", artifact_id=uid("art"))
        b = await store.register_bytes(large, artifact_type="file", conversation_id="c1")
        assert a.storage == "db" and a.size_bytes == 5 and a.sha256 == hashlib.sha256(small).hexdigest()
        assert b.storage == "file" and list(root.rglob("*.*"))
        assert (await store.register_bytes(small, artifact_type="file", artifact_id=a.artifact_id)) == a
        assert _bytes(await store.read(a.artifact_id, scope=HOST)) == small
        assert _bytes(await store.read(b.artifact_id, scope=HOST)) == large


async def test_reregistering_an_id_with_other_bytes_is_invalid(db, root, uid, fails_with):
    art = uid("art")
    async with db.transaction() as s:
        store = ArtifactStore(s, root)
        await store.register_bytes(b"one", artifact_type="file", artifact_id=art)
        with fails_with(ErrorCode.INVALID_ARGUMENT):
            await store.register_bytes(b"two", artifact_type="file", artifact_id=art)
        with fails_with(ErrorCode.INVALID_ARGUMENT):
            await store.register_bytes(b"x", artifact_type="file", artifact_id="../escape")


async def test_range_reads(db, root, fails_with):
    data = bytes(range(256)) * 20  # 5120 bytes → a file with INLINE=1024
    async with db.transaction() as s:
        store = ArtifactStore(s, root, inline_limit=INLINE)
        for meta in (await store.register_bytes(data, artifact_type="blob"),
                     await store.register_bytes(data[:1000], artifact_type="blob")):
            size = meta.size_bytes
            part = await store.read_range(meta.artifact_id, 100, 50, scope=HOST)
            assert _bytes(part) == data[100:150] and part.length == 50 and not part.eof
            tail = await store.read_range(meta.artifact_id, size - 10, 1000, scope=HOST)
            assert _bytes(tail) == data[size - 10:size] and tail.eof and tail.total_size == size
            end = await store.read_range(meta.artifact_id, size, 1, scope=HOST)
            assert end.length == 0 and end.eof
            for offset, length in ((-1, 10), (0, 0), (size + 1, 1), (0, "10"), (True, 1)):
                with fails_with(ErrorCode.INVALID_ARGUMENT):
                    await store.read_range(meta.artifact_id, offset, length, scope=HOST)


async def test_register_file_confined_to_root(db, root, tmp_path, fails_with):
    (root / "sub").mkdir()
    (root / "sub" / "ok.txt").write_bytes(b"inside")
    outside = tmp_path / "secret.txt"
    outside.write_bytes(b"secret")
    (root / "link.txt").symlink_to(outside)
    (root / "dirlink").symlink_to(tmp_path)
    async with db.transaction() as s:
        store = ArtifactStore(s, root)
        meta = await store.register_file("sub/ok.txt", artifact_type="file")
        assert meta.storage == "file" and meta.name == "ok.txt" and meta.size_bytes == 6
        assert _bytes(await store.read(meta.artifact_id, scope=HOST)) == b"inside"
        for path in ("../secret.txt", str(outside), "link.txt", "dirlink/secret.txt",
                     "sub/../../secret.txt", ".", "bad\0path"):
            with fails_with(ErrorCode.INVALID_ARGUMENT):
                await store.register_file(path, artifact_type="file")
        with fails_with(ErrorCode.INVALID_ARGUMENT):
            await store.register_file("sub", artifact_type="file")  # not a regular file


async def test_ownership_and_expiry(db, root, fails_with):
    async with db.transaction() as s:
        store = ArtifactStore(s, root)
        owned = await store.register_bytes(b"mine", artifact_type="file", conversation_id="c1")
        expired = await store.register_bytes(b"old", artifact_type="file", conversation_id="c1",
                                             expires_at=time.time() - 1)
        assert (await store.metadata(owned.artifact_id, scope=ReadScope.of_conversation("c1"))).name is None
        assert (await store.metadata(owned.artifact_id, scope=HOST)).conversation_id == "c1"
        with fails_with(ErrorCode.UNAUTHORIZED):
            await store.read(owned.artifact_id, scope=ReadScope.of_conversation("c2"))
        with fails_with(ErrorCode.UNAUTHORIZED):  # a conversation-less reader owns only its run's
            await store.read(owned.artifact_id, scope=ReadScope.of_run("run-other"))
        for call in (store.metadata, store.read):
            with fails_with(ErrorCode.NOT_FOUND):
                await call(expired.artifact_id, scope=HOST)
        with fails_with(ErrorCode.NOT_FOUND):
            await store.read_range("art_missing", 0, 1, scope=HOST)


async def test_cleanup_expired_deletes_rows_and_files(db, root):
    async with db.transaction() as s:
        store = ArtifactStore(s, root, inline_limit=INLINE)
        gone = await store.register_bytes(os.urandom(2 * INLINE), artifact_type="blob",
                                          expires_at=time.time() - 5)
        kept = await store.register_bytes(os.urandom(2 * INLINE), artifact_type="blob",
                                          expires_at=time.time() + 3600)
        files_before = set(root.rglob(f"{gone.artifact_id}.*"))
        assert files_before
        assert await store.cleanup_expired() >= 1
        assert not any(p.exists() for p in files_before)
        assert (await store.read(kept.artifact_id, scope=HOST)).total_size == 2 * INLINE


async def test_register_result_payload(db, root, fails_with):
    content = b"result bytes"
    payload = {"artifact_type": "tool_result", "mime_type": "text/plain", "name": "r.txt",
               "content_base64": base64.b64encode(content).decode(), "size_bytes": len(content),
               "sha256": hashlib.sha256(content).hexdigest(), "metadata": {"tool": "x"}}
    async with db.transaction() as s:
        store = ArtifactStore(s, root, inline_limit=INLINE)
        meta = await store.register_result(run_id="r1", runner_id="plugin:a/b/c",
                                           conversation_id="c1", data=payload)
        assert (meta.run_id, meta.conversation_id, meta.metadata) == ("r1", "c1", {"tool": "x"})
        ref = await store.register_result(run_id="r1", runner_id=None, conversation_id="c1",
                                          data={"artifact_type": "x", "artifact_id": meta.artifact_id})
        assert ref == meta
        for bad, code in (({**payload, "sha256": "0" * 64}, ErrorCode.INVALID_ARGUMENT),
                          ({**payload, "content_base64": "!!"}, ErrorCode.INVALID_ARGUMENT),
                          ({"artifact_type": "x"}, ErrorCode.INVALID_ARGUMENT),
                          ({**payload, "size_bytes": None, "sha256": None,
                            "content_base64": base64.b64encode(b"x" * (INLINE + 1)).decode()},
                           ErrorCode.PAYLOAD_TOO_LARGE)):
            with fails_with(code):
                await store.register_result(run_id="r1", runner_id=None, conversation_id="c1",
                                            data=bad)
