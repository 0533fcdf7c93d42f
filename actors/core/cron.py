"""Cron arithmetic for schedules (UTC, five fields), over ``croniter``."""
from __future__ import annotations

from datetime import datetime, timezone

from croniter import croniter


def next_tick(cron: str, after: float) -> float:
    """The first tick strictly after ``after`` (epoch seconds)."""
    return float(croniter(cron, datetime.fromtimestamp(after, timezone.utc)).get_next(float))


def latest_tick(cron: str, at: float) -> float:
    """The last tick at or before ``at``: the one a late scheduler fires (missed ones coalesce)."""
    probe = croniter(cron, datetime.fromtimestamp(at + 1e-3, timezone.utc))
    return float(probe.get_prev(float))
