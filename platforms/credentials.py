"""Credentials from the environment, never from config files, logs or errors.

:func:`read_secret` names the missing *variable* in its error, never a value; :class:`Secret`
keeps a value out of ``repr``/``str`` so it cannot slip into a log line by accident.
"""
from __future__ import annotations

import os

from protocol.errors import ErrorCode, RunnerHostError


class Secret:
    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


def read_secret(env_name: str | None, *, what: str, connection: str) -> Secret:
    """The value of ``env_name``; a clear configuration error when unset or empty."""
    if not env_name:
        raise RunnerHostError(ErrorCode.INVALID_ARGUMENT,
                              f"connection {connection!r} needs {what}: set its env var name in the config",
                              details={"connection": connection})
    value = os.environ.get(env_name, "")
    if not value:
        raise RunnerHostError(ErrorCode.INVALID_ARGUMENT,
                              f"connection {connection!r}: environment variable {env_name} ({what}) is not set",
                              details={"connection": connection, "env": env_name})
    return Secret(value)
