"""Throwaway credentials of the fake platforms (fresh per test session)."""
from __future__ import annotations

import base64
import uuid

TELEGRAM_TOKEN = "123456:TEST-" + uuid.uuid4().hex
TELEGRAM_SECRET = "tg-secret-" + uuid.uuid4().hex
SLACK_TOKEN = "xoxb-test-" + uuid.uuid4().hex
SLACK_SIGNING_SECRET = "slack-signing-" + uuid.uuid4().hex
#: Discord tokens start with the base64 of the bot's user id (hikari reads it).
DISCORD_TOKEN = (base64.b64encode(b"900000000000000001").decode().rstrip("=")
                 + ".Gtest." + uuid.uuid4().hex)
WEBHOOK_SECRET = "hook-secret-" + uuid.uuid4().hex
ONEBOT_TOKEN = "onebot-" + uuid.uuid4().hex
