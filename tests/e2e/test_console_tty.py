"""`tomo chat` on a real pseudo-terminal: line editing, history, Ctrl-C and Ctrl-D."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from pathlib import Path

from tests.memory_kit import stored_messages


class Terminal:
    """Runs a command on a pty and reads its screen output as text."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.master, slave = os.openpty()
        os.set_blocking(self.master, False)
        self.proc = subprocess.Popen(
            args, stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True
        )
        os.close(slave)
        self.seen = ""
        self.pos = 0

    def read_until(self, needle: str, timeout: float = 30) -> str:
        """Wait for `needle` to appear after the previous match."""
        deadline = time.monotonic() + timeout
        while needle not in self.seen[self.pos :]:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{needle!r} never appeared; screen so far: {self.seen!r}")
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                try:
                    self.seen += os.read(self.master, 65536).decode("utf-8", "replace")
                except OSError:
                    break
        self.pos += self.seen[self.pos :].index(needle) + len(needle)
        return self.seen

    def type(self, keys: str) -> None:
        os.write(self.master, keys.encode())

    def close(self) -> int:
        try:
            code = self.proc.wait(timeout=30)
        finally:
            os.close(self.master)
        return code


def start(data_dir: Path) -> Terminal:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOMO_")}
    env.update(
        {
            "TOMO_DATA_DIR": str(data_dir),
            "TOMO_LLM__BACKEND": "stub",
            "TERM": "xterm",
            "PROMPT_TOOLKIT_NO_CPR": "1",
        }
    )
    term = Terminal([sys.executable, "-m", "bots", "chat", "--name", "ann"], env)
    term.read_until("you>")
    return term


def test_editing_history_ctrl_c_and_ctrl_d(tmp_path: Path) -> None:
    term = start(tmp_path)
    term.type("helo\x7f\x7fllo world\r")  # two backspaces fix the typo
    term.read_until("Tomo: You said: hello world")
    term.read_until("you>")
    term.type("half a thought\x03")  # Ctrl-C at the prompt drops the line, keeps the chat
    term.read_until("(Ctrl-D or /quit leaves)")
    term.read_until("you>")
    term.type("\x04")  # Ctrl-D leaves
    assert term.close() == 0

    again = start(tmp_path)
    again.type("\x1b[A\r")  # Up: the input history of the first run
    again.read_until("Tomo: You said: hello world")
    again.read_until("you>")
    again.type("/quit\r")
    assert again.close() == 0
    # read through the store: what was said is encrypted at rest
    texts = [text for role, text in stored_messages(tmp_path) if role == "user"]
    assert texts == ["hello world", "hello world"]
