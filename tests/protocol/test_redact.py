"""protocol.redact: the credential shapes every error, log line and diagnostic is scrubbed of."""
from __future__ import annotations

import pytest

from protocol.redact import MASK, redact


@pytest.mark.parametrize("text, secret, kept", [
    ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.payload", "eyJhbGciOiJIUzI1NiJ9", "Bearer "),
    ("token abcdefgh12345678 rejected", "abcdefgh12345678", "token "),
    ("provider said: invalid key sk-proj-0123456789abcdef", "sk-proj-0123456789abcdef", "invalid key "),
    ("git push with ghp_0123456789abcdefghij failed", "ghp_0123456789abcdefghij", "git push with "),
    ("OPENAI_API_KEY=sk-live-0123456789abcdef", "sk-live", "OPENAI_API_KEY="),
    ("db password: hunter2hunter2, retrying", "hunter2hunter2", "password: "),
    ("x-api-key: k_9f8e7d6c5b4a", "k_9f8e7d6c5b4a", "x-api-key: "),
])
def test_credential_shapes_are_masked_and_their_labels_kept(text, secret, kept):
    out = redact(text)
    assert secret not in out and MASK in out and kept in out, out


def test_given_secrets_and_secret_named_env_values_are_masked(monkeypatch):
    monkeypatch.setenv("RUNNERHOST_TEST_SECRET", "s3cr3t-value-from-env")
    out = redact("run with s3cr3t-value-from-env and capability cap-0a1b2c3d", ("cap-0a1b2c3d",))
    assert "s3cr3t-value-from-env" not in out and "cap-0a1b2c3d" not in out


def test_ordinary_text_is_left_alone():
    text = "the token budget is 4096; a keyboard has keys; sk-short"
    assert redact(text) == text
