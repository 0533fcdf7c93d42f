"""The bench's sections; each ``run(ctx)`` measures and returns its raw section document."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..cluster import BenchDatabase, Cluster
    from ..langgraph_server import LangGraphServer
    from ..plan import Plan


@dataclass
class Context:
    plan: "Plan"
    cluster: "Cluster"
    db: "BenchDatabase"
    langgraph: "LangGraphServer | None" = None
