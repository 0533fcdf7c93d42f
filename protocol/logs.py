"""RunnerHost's logging: one logger hierarchy and one redacting filter (SPEC §11).

* :func:`get_logger` names every logger ``runnerhost.<module>``, so one
  ``logging.getLogger("runnerhost")`` configures all of them.
* :class:`RedactingFilter` applies :func:`protocol.redact.redact` to a record's
  message (after formatting its args), exception text with traceback, and stack.
* :func:`install_log_redaction` makes the filter see *every* record created in
  the process, whatever its logger or handler: it wraps the log-record factory.
  (A logger's filters miss records propagated from child loggers, and a
  handler's filters miss handlers that Ray or Serve add later.) It is
  idempotent; Ray runs it in every worker process as the runtime env's
  ``worker_process_setup_hook`` (:data:`SETUP_HOOK`), and actors call it again
  when they are constructed.
"""
from __future__ import annotations

import logging
import traceback
from typing import Any

from .redact import redact

ROOT = "runnerhost"
#: The import path Ray runs in every worker process (``runtime_env["worker_process_setup_hook"]``).
SETUP_HOOK = "protocol.logs.install_log_redaction"
_MARK = "_runnerhost_redacted"


def get_logger(module: str) -> logging.Logger:
    """The logger of a module (pass ``__name__``): ``runnerhost.<module>``."""
    return logging.getLogger(module if module == ROOT or module.startswith(ROOT + ".") else f"{ROOT}.{module}")


class RedactingFilter(logging.Filter):
    """Redacts a record in place (message with its args, exception text, stack); never drops one."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, _MARK, False):
            return True
        try:
            message = record.getMessage()
        except Exception:  # malformed args: logging reports those itself; still scrub the template
            message = str(record.msg)
        record.msg, record.args = redact(message), ()
        if record.exc_info and record.exc_info[0] is not None and not record.exc_text:
            record.exc_text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
            record.exc_info = None  # formatters print exc_text; none may re-render the raw traceback
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        setattr(record, _MARK, True)
        return True


_FILTER = RedactingFilter()


def install_log_redaction() -> None:
    """Make every log record of this process pass :class:`RedactingFilter` (idempotent)."""
    factory = logging.getLogRecordFactory()
    if getattr(factory, _MARK, False):
        return

    def redacting_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        _FILTER.filter(record)
        return record

    setattr(redacting_factory, _MARK, True)
    logging.setLogRecordFactory(redacting_factory)
