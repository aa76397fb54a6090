"""`tomo chat` as a person uses it: a real process, a real SQLite file, a pipe."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.memory_kit import stored_messages

EOF_MARK = "/quit\n"


def tomo(
    data_dir: Path, *args: str, stdin: bytes = b"", backend: str = "stub", timeout: float = 120
) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOMO_")}
    env.update({"TOMO_DATA_DIR": str(data_dir), "TOMO_LLM__BACKEND": backend})
    return subprocess.run(
        [sys.executable, "-m", "bots", *args],
        input=stdin,
        env=env,
        capture_output=True,
        timeout=timeout,
        cwd=data_dir,
    )


def stored(data_dir: Path) -> list[tuple[str, str]]:
    # read through the store: what was said is encrypted at rest
    return stored_messages(data_dir)


def test_chat_streams_answers_and_remembers_across_runs(tmp_path: Path) -> None:
    first = tomo(tmp_path, "chat", "--name", "alice", stdin=b"my cat is Miso\n/quit\n")
    assert first.returncode == 0, first.stderr
    out = first.stdout.decode()
    assert out.splitlines()[0] == "Tomo is here. Type a message; /quit or Ctrl-D leaves."
    assert "Tomo: You said: my cat is Miso" in out
    second = tomo(tmp_path, "chat", "--name", "alice", stdin=b"and my dog?\n")
    assert second.returncode == 0, second.stderr
    assert stored(tmp_path) == [
        ("user", "my cat is Miso"),
        ("assistant", "You said: my cat is Miso"),
        ("user", "and my dog?"),
        ("assistant", "You said: and my dog?"),
    ]


def test_empty_and_invalid_utf8_lines_are_explained_and_skipped(tmp_path: Path) -> None:
    proc = tomo(tmp_path, "chat", "--name", "bob", stdin=b"   \ncaf\xff\xfe ok\nstill here\n")
    assert proc.returncode == 0
    out, err = proc.stdout.decode(), proc.stderr.decode()
    assert "Nothing to send: type a message, or /quit to leave." in out
    assert "That line is not valid UTF-8 (byte 0xff at position 3); nothing was sent." in err
    assert "Tomo: You said: still here" in out
    assert stored(tmp_path) == [("user", "still here"), ("assistant", "You said: still here")]


def test_a_100kb_message_is_stored_whole(tmp_path: Path) -> None:
    big = "word " * 20_000
    proc = tomo(tmp_path, "chat", "--name", "carol", stdin=big.encode() + b"\n")
    assert proc.returncode == 0, proc.stderr
    rows = stored(tmp_path)
    assert rows[0] == ("user", big)
    assert rows[1][0] == "assistant"


def test_unknown_command_gets_usage_not_a_traceback(tmp_path: Path) -> None:
    proc = tomo(tmp_path, "chat", "--name", "dan", stdin=b"/frobnicate\n")
    assert "Tomo: Unknown command /frobnicate. Try /help." in proc.stdout.decode()
    assert b"Traceback" not in proc.stderr


def _env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOMO_")}
    env.update({"TOMO_DATA_DIR": str(data_dir), "TOMO_LLM__BACKEND": "stub"})
    return env


def test_a_second_chat_on_the_same_data_dir_is_refused(tmp_path: Path) -> None:
    with subprocess.Popen(
        [sys.executable, "-m", "bots", "chat", "--name", "eve"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=_env(tmp_path),
    ) as first:
        assert first.stdout is not None
        assert first.stdin is not None
        assert b"is here" in first.stdout.readline()  # holds the data dir now
        second = tomo(tmp_path, "chat", "--name", "eve", stdin=b"hello\n")
        assert second.returncode == 1
        assert second.stderr.decode().strip() == (
            f"error: Another tomo is already running on {tmp_path}. Close it first, or give "
            "this one its own TOMO_DATA_DIR."
        )
        first.stdin.write(b"still mine\n/quit\n")
        first.stdin.close()
        assert first.wait(timeout=60) == 0
    assert stored(tmp_path) == [("user", "still mine"), ("assistant", "You said: still mine")]


def test_ctrl_c_between_messages_leaves_cleanly(tmp_path: Path) -> None:
    """SIGINT while waiting for input ends the chat without a traceback; nothing is lost."""
    with subprocess.Popen(
        [sys.executable, "-m", "bots", "chat", "--name", "fay"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(tmp_path),
    ) as proc:
        assert proc.stdin is not None
        assert proc.stdout is not None
        assert proc.stderr is not None
        proc.stdout.readline()
        proc.stdin.write(b"before ctrl-c\n")
        proc.stdin.flush()
        assert proc.stdout.readline().startswith(b"Tomo: You said: before ctrl-c")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
        assert b"(interrupted; everything said so far is saved)" in proc.stdout.read()
        assert b"Traceback" not in proc.stderr.read()
    assert stored(tmp_path) == [
        ("user", "before ctrl-c"),
        ("assistant", "You said: before ctrl-c"),
    ]


def test_missing_model_file_is_a_clear_error(tmp_path: Path) -> None:
    env_model = tmp_path / "missing.gguf"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOMO_")}
    env.update({"TOMO_DATA_DIR": str(tmp_path), "TOMO_LLM__MODEL_PATH": str(env_model)})
    proc = subprocess.run(
        [sys.executable, "-m", "bots", "chat"], input=b"hi\n", env=env, capture_output=True
    )
    assert proc.returncode == 1
    assert proc.stderr.decode().strip() == (
        f"error: The model file {env_model} does not exist. Fix or unset TOMO_LLM__MODEL_PATH."
    )


@pytest.mark.model
def test_real_bundled_model_answers_and_the_answer_is_stored(tmp_path: Path) -> None:
    proc = tomo(
        tmp_path, "chat", "--name", "gus", stdin=b"Hello! Who are you?\n", backend="llamacpp"
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.decode()
    # The answer may run over several lines: all that follows "Tomo: " is the answer.
    printed = out.split("\nTomo: ", 1)[1].strip()
    # A sticker, when one goes with the answer, is noted on a line of its own after it.
    printed = re.sub(r"\n\(sends an? \w+ sticker\)$", "", printed)
    rows = stored(tmp_path)
    assert rows[0] == ("user", "Hello! Who are you?")
    assert rows[1][0] == "assistant"
    assert rows[1][1]
    assert printed == rows[1][1]


def test_memory_export_is_saved_as_a_file(tmp_path: Path) -> None:
    proc = tomo(tmp_path, "chat", "--name", "hana", stdin=b"I like plums\n/memory export\n")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.decode()
    saved = next(line for line in out.splitlines() if line.startswith("(saved "))
    path = Path(saved.rsplit(" to ", 1)[1].rstrip(")"))
    assert path.parent == tmp_path / "exports"
    data = json.loads(path.read_text("utf-8"))
    assert "I like plums" in json.dumps(data)
    # The export leaves no copy in the blob store (a sticker render may stay: stickers
    # are content-addressed and shared, a few dozen at most).
    blobs = tmp_path / "blobs"
    left = [p.read_bytes() for p in blobs.rglob("*") if p.is_file()] if blobs.exists() else []
    assert not [b for b in left if b"I like plums" in b]
    assert all(b[:4] == b"RIFF" and b[8:12] == b"WEBP" for b in left)
    # Commands are not conversation: only the chat itself is stored.
    assert stored(tmp_path) == [("user", "I like plums"), ("assistant", "You said: I like plums")]
