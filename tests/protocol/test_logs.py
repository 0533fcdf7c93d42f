"""protocol.logs: one logger hierarchy, and every record redacted — message, args, traceback, stack."""
from __future__ import annotations

import io
import logging

from protocol.logs import RedactingFilter, get_logger, install_log_redaction

SECRET = "sk-live-0123456789abcdef"


def test_loggers_share_one_hierarchy():
    assert get_logger("actors.host").name == "runnerhost.actors.host"
    assert get_logger("runnerhost.serve.errors").name == "runnerhost.serve.errors"
    root = logging.getLogger("runnerhost")
    seen = []
    handler = logging.Handler()
    handler.emit = seen.append  # type: ignore[method-assign]
    root.addHandler(handler)
    try:
        get_logger("store.ledger").warning("one configuration for all")
    finally:
        root.removeHandler(handler)
    assert [r.name for r in seen] == ["runnerhost.store.ledger"]


def test_the_filter_scrubs_message_args_traceback_and_stack():
    install_log_redaction()
    install_log_redaction()  # idempotent
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    log = get_logger("tests.logs")
    log.addHandler(handler)
    log.propagate = False
    try:
        try:
            raise RuntimeError(f"boom Authorization: Bearer {SECRET}")
        except RuntimeError:
            log.exception("failed with api_key=%s", SECRET)
        log.warning("where: %s", SECRET, stack_info=True)
        logging.getLogger("somebody.else").handle(
            logging.getLogger("somebody.else").makeRecord("x", logging.ERROR, "f", 1, SECRET, (), None))
    finally:
        log.removeHandler(handler)
    text = out.getvalue()
    assert "RuntimeError" in text and "Traceback" in text and "failed with api_key=***" in text
    assert SECRET not in text


def test_a_record_with_broken_args_is_still_scrubbed_and_kept():
    record = logging.LogRecord("x", logging.INFO, "f", 1, "token %d " + SECRET, ("not a number",), None)
    assert RedactingFilter().filter(record) is True
    assert SECRET not in record.getMessage()
