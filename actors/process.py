"""What a long-lived actor process does once it is constructed.

An actor process carries 70–270 k objects from its imports (Ray, pydantic, SQLAlchemy, …). A full
garbage collection walks every one of them — 40–130 ms here — while the process answers nothing:
an outlier for every run in flight through it. Those objects live as long as the process, so
``gc.freeze`` moves them out of the collector's view once the actor is built (Serve does the same
for its replicas); later collections walk only what requests created since.
"""
from __future__ import annotations

import gc


def freeze_startup_objects(*, collect: bool = False) -> int:
    """Freeze what exists now; the number of objects frozen. ``collect`` first for singletons
    (storage, registry: a one-time pause keeps import garbage out of the frozen set); pooled
    actors skip it — each creation is on a growing pool's critical path and leaves almost no
    garbage (tens of objects)."""
    if collect:
        gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
