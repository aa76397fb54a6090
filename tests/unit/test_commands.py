from __future__ import annotations

from brain.commands import Command, parse_command, run_command
from storage.sql import SqlMemoryStore
from tests.memory_kit import make_world


def test_plain_text_is_no_command() -> None:
    assert parse_command("hello /there") is None
    assert parse_command("/") is None
    assert parse_command("/ spaced") is None


def test_command_with_arguments() -> None:
    assert parse_command("/memory search 'my sister'") == Command(
        name="memory", args=("search", "my sister")
    )


def test_bad_quotes_fall_back_to_whitespace() -> None:
    assert parse_command('/memory search "unclosed') == Command(
        name="memory", args=("search", '"unclosed')
    )


def test_telegram_bot_suffix() -> None:
    assert parse_command("/Help@TomoBot", bot_username="tomobot") == Command(name="help", args=())
    assert parse_command("/help@otherbot", bot_username="tomobot") is None


def test_names_in_any_script_and_aliases() -> None:
    assert parse_command("/记忆") == Command(name="memory", args=())
    assert parse_command("/記憶 list") == Command(name="memory", args=("list",))
    assert parse_command("／help") == Command(name="help", args=())
    assert parse_command("/mem!ory") is None


async def test_help_and_unknown(sqlite_store: SqlMemoryStore) -> None:
    world = await make_world(sqlite_store)
    ctx = world.ctx(world.alice)
    [help_reply] = await run_command(Command(name="help", args=()), ctx)
    assert "/help" in help_reply.text
    assert "/memory" in help_reply.text
    assert help_reply.chat == ctx.inbound.chat
    assert help_reply.reply_to == ctx.inbound.id
    [unknown] = await run_command(Command(name="frobnicate", args=()), ctx)
    assert unknown.text == "Unknown command /frobnicate. Try /help."
