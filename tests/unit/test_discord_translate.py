"""The pure parts of bots/discord/translate.py (mentions, slash commands as text
commands, attachments, text splitting) and the token filter of bots/redact.py."""

from __future__ import annotations

import logging
import shlex

import pytest

from bots.discord.logs import LOGGERS, mask_token
from bots.discord.translate import (
    TEXT_LIMIT,
    attachment_kind,
    clean_text,
    command_text,
    forget_target,
    pieces,
    strip_leading_mention,
)
from bots.redact import MASK, SecretFilter
from brain.commands import parse_command

BOT = 1100000000000000001
ALICE = 1100000000000000101


@pytest.mark.parametrize(
    ("content", "read_as"),
    [
        (f"<@{BOT}> hi there", "hi there"),
        (f"<@!{BOT}>, what's new?", "what's new?"),
        (f"  <@{BOT}>: /memory list", "/memory list"),
        (f"thanks <@{BOT}>!", f"thanks <@{BOT}>!"),  # only a leading mention goes
        (f"<@{ALICE}> hi", f"<@{ALICE}> hi"),  # somebody else's
    ],
)
def test_the_leading_mention_of_the_bot_is_stripped(content: str, read_as: str) -> None:
    assert strip_leading_mention(content, bot_id=BOT) == read_as


def test_mentions_read_as_people_see_them() -> None:
    text = f"ask <@{ALICE}> and <@&{ALICE + 1}> in <#{ALICE + 2}> or <@{ALICE + 3}>"
    cleaned = clean_text(
        text,
        users={ALICE: "Alice"},
        roles={ALICE + 1: "mods"},
        channels={ALICE + 2: "general"},
    )
    assert cleaned == f"ask @Alice and @mods in #general or <@{ALICE + 3}>"


@pytest.mark.parametrize(
    ("args", "text"),
    [
        (("memory", "show", 12), "/memory show 12"),
        (("memory", "list", None), "/memory list"),
        (("voice", "on"), "/voice on"),
        (("link", 'say "hi" now'), '/link "say \\"hi\\" now"'),
    ],
)
def test_slash_commands_become_the_text_commands_the_brain_reads(
    args: tuple[str, ...], text: str
) -> None:
    name, *rest = args
    assert command_text(name, *rest) == text
    command = parse_command(text)
    assert command is not None
    assert command.name == name
    assert list(command.args) == shlex.split(text)[1:]


def test_the_forget_preview_names_what_the_button_confirms() -> None:
    assert (
        forget_target("I would forget #12 ...\nTo forget it, send: /memory forget 12 confirm")
        == "12"
    )
    assert forget_target("To do it, send: /memory forget all confirm") == "all"
    assert forget_target("I have no memory #12 about you.") is None


@pytest.mark.parametrize(
    ("content_type", "filename", "voice", "kind"),
    [
        ("audio/ogg", "voice-message.ogg", True, "voice"),
        (None, "voice-message.ogg", True, "voice"),
        ("audio/mpeg", "song.mp3", False, "voice"),
        (None, "memo.m4a", False, "voice"),
        ("image/png", "cat.png", False, "image"),
        (None, "cat.JPG", False, "image"),
        ("application/pdf", "paper.pdf", False, None),
        ("video/mp4", "clip.mp4", False, None),
    ],
)
def test_which_attachments_are_kept(
    content_type: str | None, filename: str, voice: bool, kind: str | None
) -> None:
    assert attachment_kind(content_type=content_type, filename=filename, voice=voice) == kind


def test_long_text_is_cut_at_breaks_within_discords_limit() -> None:
    text = "\n\n".join((f"Paragraph {i}. " + "word " * 120).strip() for i in range(10))
    cut = pieces(text)
    assert len(cut) > 1
    assert all(len(p) <= TEXT_LIMIT for p in cut)
    assert all(p.startswith("Paragraph") for p in cut)  # cut between paragraphs
    assert "\n\n".join(cut) == text


def test_the_token_is_masked_in_messages_and_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    token = "MTEw.secret-TOKEN_value"
    masked = mask_token(token)
    try:
        caplog.set_level(logging.DEBUG)
        logger = logging.getLogger("discord.http")
        logger.debug("Authorization: Bot %s", token)
        try:
            raise RuntimeError(f"failed with {token}")
        except RuntimeError:
            logger.exception("boom")
    finally:
        masked.remove()
    assert token not in caplog.text
    assert MASK in caplog.text
    assert "discord.http" in LOGGERS
    assert SecretFilter(token).mask(f"x {token} y") == f"x {MASK} y"
