"""Knowledge ingestion over HTTP: documents become retrievable, listed, and admin-only."""
from __future__ import annotations

import uuid

import httpx
import pytest

pytestmark = pytest.mark.ray


async def test_put_document_then_list_and_scope(client, serve_app):
    kb = f"kb-{uuid.uuid4().hex[:8]}"
    r = await client.put(f"/v1/knowledge/{kb}/documents/vacation.md",
                         json={"title": "Vacation", "content": "Employees receive thirty days of paid vacation."})
    assert r.status_code == 200, r.text
    assert r.json() == {"kb_id": kb, "doc_id": "vacation.md", "chunks": 1}
    listed = await client.get("/v1/knowledge")
    assert kb in listed.json()
    async with httpx.AsyncClient(base_url=serve_app.url, headers=serve_app.ingest) as ingest_only:
        denied = await ingest_only.put(f"/v1/knowledge/{kb}/documents/x", json={"content": "x"})
    assert denied.status_code == 401 and denied.json()["code"] == "unauthorized"


@pytest.mark.parametrize("body", [{}, {"content": ""}, {"content": "x", "surprise": 1}])
async def test_bad_document_bodies_are_400(client, body):
    r = await client.put("/v1/knowledge/kb1/documents/doc", json=body)
    assert r.status_code == 400 and r.json()["code"] == "invalid_argument"
