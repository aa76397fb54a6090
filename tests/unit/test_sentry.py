"""Sentry events carry the code's words, never a chat's, a memory's or a secret.

A real sentry_sdk client with tomo's options and a transport that keeps the envelopes
in memory (nothing leaves the process)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import sentry_sdk
from sentry_sdk.envelope import Envelope
from sentry_sdk.transport import Transport

from bots.sentry import Scrubber, secret_values, sentry_options
from bots.settings import Settings

TOKEN = "7301234567:AAHsecretsecretsecretsecretsecret12"
OTHER_TOKEN = "5550001111:BBBsomeoneelsestokensomeoneelsesto"  # not in the settings
DB_PASSWORD = "dbpass-4711"
CHAT = "my sister May moved to Osaka"
MEMORY = "Alice is afraid of thunder"


class KeepInMemory(Transport):
    def __init__(self) -> None:
        super().__init__()
        self.envelopes: list[Envelope] = []

    def capture_envelope(self, envelope: Envelope) -> None:
        self.envelopes.append(envelope)

    def sent(self) -> bytes:
        return b"".join(e.serialize() for e in self.envelopes)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path,
        database_url=f"postgresql://tomo:{DB_PASSWORD}@db.internal/tomo",
        telegram={"token": TOKEN},
        sentry={"dsn": "https://publickey123@o1.ingest.example.invalid/42", "environment": "test"},
    )


@pytest.fixture
def transport(settings: Settings) -> Iterator[KeepInMemory]:
    kept = KeepInMemory()
    sentry_sdk.init(**sentry_options(settings), transport=kept)
    logger = logging.getLogger("tests.sentry")
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        yield kept
    finally:
        logger.setLevel(level)
        sentry_sdk.get_client().close()
        sentry_sdk.get_global_scope().set_client(None)  # no client for the other tests


def answer(text: str, token: str) -> None:
    prompt = f"You are Tomo. Remember: {MEMORY}. They said: {text}"  # a local variable
    raise RuntimeError(f"Telegram refused {token} while answering {text!r}: {prompt}")


def test_an_error_event_keeps_the_code_and_loses_the_words(transport: KeepInMemory) -> None:
    logger = logging.getLogger("tests.sentry")
    logger.info("heard %s", CHAT)  # a breadcrumb
    logger.warning(f"a template that has a token in it: {TOKEN} and {OTHER_TOKEN}")
    try:
        answer(CHAT, TOKEN)
    except RuntimeError:
        sentry_sdk.capture_exception()
    logger.error(
        "could not answer %s", CHAT, extra={"memory": MEMORY, "url": f"/bot{TOKEN}/sendMessage"}
    )
    sentry_sdk.flush()
    sent = transport.sent()
    assert len(transport.envelopes) == 2  # the exception, and the error log line
    for secret in (TOKEN, OTHER_TOKEN, DB_PASSWORD, CHAT, MEMORY, "Osaka", "thunder"):
        assert secret.encode() not in sent, secret
    assert b'"vars"' not in sent  # no local variables at all
    # what helps an operator is still there
    assert b"RuntimeError" in sent
    assert b'"function":"answer"' in sent
    assert b"could not answer %s" in sent  # the log line's template
    assert b"heard %s" in sent  # the breadcrumb's template
    assert b"a template that has a token in it: <token> and <token>" in sent
    assert b'"environment":"test"' in sent


def test_secret_values_are_every_secret_setting_and_url_passwords(settings: Settings) -> None:
    found = secret_values(settings)
    assert TOKEN in found
    assert DB_PASSWORD in found
    assert "publickey123" in found  # the DSN's key, not its address


def test_breadcrumb_data_is_dropped() -> None:
    scrubber = Scrubber([TOKEN])
    crumb = {
        "type": "http",
        "category": "httplib",
        "level": "info",
        "message": f"POST https://api.telegram.org/bot{TOKEN}/sendMessage",
        "data": {"url": f"https://api.telegram.org/bot{TOKEN}/sendMessage", "body": CHAT},
    }
    assert scrubber.before_breadcrumb(crumb, {}) == {
        "type": "http",
        "category": "httplib",
        "level": "info",
    }
