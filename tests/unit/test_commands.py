from __future__ import annotations

from brain.commands import Command, parse_command, run_command


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


def test_help_and_unknown() -> None:
    assert "/help" in run_command(Command(name="help", args=()))
    assert run_command(Command(name="frobnicate", args=())) == (
        "Unknown command /frobnicate. Try /help."
    )
