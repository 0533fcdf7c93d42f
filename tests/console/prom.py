"""Read RunnerHost's metrics back from Ray's Prometheus endpoints (one per node).

Each node's metrics agent serves ``http://<NodeManagerAddress>:<MetricsExportPort>/metrics``
(``ray.nodes()``); it is up with a plain local ``ray.init(include_dashboard=False)``. A sample
recorded in several processes appears once per ``WorkerId``: :func:`scrape` sums them.
"""
from __future__ import annotations

import time
from collections import defaultdict
from typing import Callable, Iterable

import httpx
import ray
from prometheus_client.parser import text_string_to_metric_families


def metrics_urls() -> list[str]:
    return [f"http://{n['NodeManagerAddress']}:{n['MetricsExportPort']}/metrics"
            for n in ray.nodes() if n.get("Alive") and n.get("MetricsExportPort")]


def scrape(sample_name: str, labels: Iterable[str]) -> dict[tuple[str, ...], float]:
    """``{label values: value}`` of ``sample_name`` summed over nodes and recording processes."""
    labels = tuple(labels)
    out: dict[tuple[str, ...], float] = defaultdict(float)
    for url in metrics_urls():
        text = httpx.get(url, timeout=10).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == sample_name:
                    out[tuple(sample.labels.get(k, "") for k in labels)] += sample.value
    return dict(out)


def wait_for(check: Callable[[], tuple[bool, object]], timeout: float = 60.0, every: float = 1.0) -> object:
    """Poll ``check`` (→ ``(done, detail)``) until done; Ray reports metrics every few seconds."""
    deadline = time.monotonic() + timeout
    while True:
        done, detail = check()
        if done:
            return detail
        if time.monotonic() > deadline:
            raise AssertionError(f"metrics did not match within {timeout:.0f} s: {detail}")
        time.sleep(every)
