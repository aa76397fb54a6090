"""Telegram: python-telegram-bot (v22, async) against the Bot API or any server like it.

translate.py is pure (Telegram messages <-> Inbound, text splitting), media.py fetches
files into the blob store, send.py delivers Replies, webhook.py serves webhook mode,
adapter.py holds the connection and the update loop.
"""

from __future__ import annotations

import os

# PTB 22 is moving durations (Voice.duration, RetryAfter.retry_after) from int seconds to
# timedelta and warns on every int read; opt in to the new types, as PTB recommends.
os.environ.setdefault("PTB_TIMEDELTA", "true")
