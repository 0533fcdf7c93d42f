"""Knowledge base: chunking, replacement on re-ingest, ranked retrieval."""
from __future__ import annotations

from protocol.errors import ErrorCode
from store.knowledge import CHUNK_CHARS, KnowledgeStore, chunk_text

DOCS = {
    "billing": ("Billing and invoices",
                "Invoices are issued monthly. Refunds for the invoice are processed in 5 days."),
    "password": ("Reset your password",
                 "To reset a forgotten password open settings, choose security and press reset. "
                 "The password reset link expires after one hour."),
    "shipping": ("Shipping", "Parcels ship worldwide; tracking numbers arrive by email."),
}


def test_chunk_text_cuts_at_whitespace():
    text = " ".join(f"word{i}" for i in range(1000))
    chunks = chunk_text(text)
    assert len(chunks) > 1 and all(len(c) <= CHUNK_CHARS for c in chunks)
    assert " ".join(chunks) == text
    assert chunk_text("short") == ["short"]


async def test_retrieve_ranks_the_right_document_first(db, uid):
    kb = uid("kb")
    async with db.transaction() as s:
        store = KnowledgeStore(s)
        for doc_id, (title, content) in DOCS.items():
            await store.ingest(kb, doc_id, title, content, {"lang": "en"})
        await store.ingest(uid("other-kb"), "password", "Password", "password password password")
    async with db.transaction() as s:
        store = KnowledgeStore(s)
        hits = await store.retrieve(kb, "How do I reset my password?", top_k=3)
        assert hits[0]["doc_id"] == "password"
        assert hits[0]["metadata"] == {"lang": "en"} and hits[0]["title"] == "Reset your password"
        assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
        assert (await store.retrieve(kb, "refund invoice"))[0]["doc_id"] == "billing"
        assert await store.retrieve(kb, "quantum") == []
        assert kb in await store.list_kbs()


async def test_long_documents_are_chunked_and_reingest_replaces(db, uid, fails_with):
    kb = uid("kb")
    filler = " ".join(["lorem ipsum dolor sit amet"] * 120)
    async with db.transaction() as s:
        store = KnowledgeStore(s)
        chunks = await store.ingest(kb, "manual", "Manual", f"{filler} zebra crossing rules. {filler}")
        assert chunks >= 3
        hits = await store.retrieve(kb, "zebra")
        assert len(hits) == 1 and hits[0]["doc_id"].startswith("manual#")
        assert hits[0]["metadata"]["source_doc_id"] == "manual"
        assert hits[0]["metadata"]["chunks"] == chunks
        assert await store.ingest(kb, "manual", "Manual", "now short, about giraffes") == 1
        assert await store.retrieve(kb, "zebra") == []
        assert [h["doc_id"] for h in await store.retrieve(kb, "giraffes")] == ["manual"]
        with fails_with(ErrorCode.INVALID_ARGUMENT):
            await store.retrieve(kb, "??")
        with fails_with(ErrorCode.INVALID_ARGUMENT):
            await store.ingest(kb, "empty", None, "   ")
        with fails_with(ErrorCode.INVALID_ARGUMENT):
            await store.ingest(kb, "manual#2", None, "chunk ids are reserved")
