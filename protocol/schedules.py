"""Schedules (SPEC §13): cron expressions per agent that fire ``schedule.triggered`` events."""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

SCHEDULE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
MAX_SCHEDULES_PER_AGENT = 50


class ScheduleSpec(BaseModel):
    """One cron schedule. ``cron`` is five fields (minute hour day month weekday), evaluated in UTC.

    Every tick fires one conversation-less ``schedule.triggered`` event carrying ``text`` as input
    and ``data`` plus ``{schedule_id, tick}`` as its data."""

    model_config = ConfigDict(extra="forbid")

    schedule_id: str = Field(pattern=SCHEDULE_ID_PATTERN)
    cron: str = Field(min_length=9, max_length=128)
    enabled: bool = True
    text: str | None = Field(default=None, max_length=4000)
    data: dict[str, Any] = Field(default_factory=dict)

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        from croniter import croniter
        value = " ".join(value.split())
        if len(value.split(" ")) != 5 or not croniter.is_valid(value):
            raise ValueError(f"invalid cron expression {value!r} (five fields: minute hour day month weekday)")
        return value


class ScheduleSet(BaseModel):
    """Body of ``PUT /v1/agents/{id}/schedules``: the agent's complete schedule list."""

    model_config = ConfigDict(extra="forbid")

    schedules: list[ScheduleSpec] = Field(default_factory=list, max_length=MAX_SCHEDULES_PER_AGENT)

    @field_validator("schedules")
    @classmethod
    def _unique_ids(cls, value: list[ScheduleSpec]) -> list[ScheduleSpec]:
        ids = [s.schedule_id for s in value]
        if len(ids) != len(set(ids)):
            raise ValueError("schedule_id values must be unique")
        return value


class ScheduleRecord(ScheduleSpec):
    agent_id: str
    next_fire_at: int | None = None
    last_fired_at: int | None = None
    created_at: int
    updated_at: int
