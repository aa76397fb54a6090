"""Discord: discord.py (2.x) against the Discord API or any server like it.

translate.py is pure (Discord messages <-> Inbound, slash commands -> text commands,
text splitting), media.py downloads attachments into the blob store, send.py delivers
Replies (voice messages included), slash.py holds the slash commands and their ephemeral
answers, adapter.py holds the connection and the event handlers.
"""

from __future__ import annotations

import warnings

with warnings.catch_warnings():
    # discord.py imports audioop for voice channels (which tomo never joins); Python 3.11
    # and 3.12 warn that it is deprecated. Imported here once, before any module of ours.
    warnings.filterwarnings(
        "ignore", message="'audioop' is deprecated", category=DeprecationWarning
    )
    import discord  # noqa: F401
