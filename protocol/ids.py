"""Runner ids: ``plugin:<author>/<name>/<runner>``; nothing else is accepted."""
from __future__ import annotations

import re
from typing import NamedTuple

from .errors import invalid_argument

_SEGMENT = r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}"
_RUNNER_ID = re.compile(rf"plugin:({_SEGMENT})/({_SEGMENT})/({_SEGMENT})")


class RunnerId(NamedTuple):
    author: str
    name: str
    runner: str

    def __str__(self) -> str:
        return f"plugin:{self.author}/{self.name}/{self.runner}"

    @property
    def is_builtin(self) -> bool:
        return self.author == "builtin"


def parse_runner_id(value: str) -> RunnerId:
    if not isinstance(value, str):
        raise invalid_argument("runner id must be a string")
    match = _RUNNER_ID.fullmatch(value)
    if match is None:
        raise invalid_argument(
            f"invalid runner id {value[:80]!r}: expected 'plugin:<author>/<name>/<runner>'",
            runner_id=value[:80],
        )
    return RunnerId(*match.groups())


def validate_runner_id(value: str) -> str:
    """Pydantic-friendly validator: returns the canonical string."""
    return str(parse_runner_id(value))
