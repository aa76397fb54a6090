"""Keep the bot token out of the logs.

discord.py sends the token in the Authorization header and the gateway IDENTIFY, and
never logs either; the filter is a guard all the same (a traceback, a debug event, a
library change), on every logger that sees requests or gateway traffic.
"""

from __future__ import annotations

from bots.redact import MASK, SecretFilter, SecretMasked

LOGGERS = (
    "discord",
    "discord.client",
    "discord.gateway",
    "discord.http",
    "discord.state",
    "discord.shard",
    "discord.app_commands.tree",
    "discord.ui.view",
    "discord.ui.modal",
    "discord.webhook.async_",
    "aiohttp.client",
    "aiohttp.websocket",
    "bots.discord.adapter",
    "bots.discord.media",
    "bots.discord.send",
    "bots.discord.slash",
)


def mask_token(token: str) -> SecretMasked:
    """Mask `token` on the loggers above until `.remove()`."""
    return SecretMasked(token, loggers=LOGGERS)


__all__ = ["LOGGERS", "MASK", "SecretFilter", "mask_token"]
