"""Logs carry no message content by default, even at DEBUG (a real `tomo chat` process:
libraries that log SQL parameters are held back unless TOMO_LOG_CONTENT=true)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SAID = "my sister May moved to Osaka in June"


def chat(data_dir: Path, **settings: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOMO_")}
    env.update(
        {
            "TOMO_DATA_DIR": str(data_dir),
            "TOMO_LLM__BACKEND": "stub",
            "TOMO_EMBED__BACKEND": "hash",
            "TOMO_STT__ENABLED": "false",
            "TOMO_TTS__BACKEND": "off",
            "TOMO_STICKERS__ENABLED": "false",
            # stored in plaintext, so SQL parameters would show the words if logged
            "TOMO_CRYPTO__ENABLED": "false",
            **{f"TOMO_{k.upper()}": v for k, v in settings.items()},
        }
    )
    proc = subprocess.run(
        [sys.executable, "-m", "bots", "chat", "--name", "alice"],
        input=f"{SAID}\n/quit\n",
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=data_dir,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"You said: {SAID}" in proc.stdout  # it was handled, stored and answered
    return proc


def test_debug_logs_leave_out_what_people_said(tmp_path: Path) -> None:
    proc = chat(tmp_path, log_level="DEBUG")
    assert " DEBUG " in proc.stderr  # logging is on, at DEBUG
    assert "Osaka" not in proc.stderr


def test_content_logging_is_an_explicit_choice(tmp_path: Path) -> None:
    proc = chat(tmp_path, log_level="DEBUG", log_content="true")
    assert "Osaka" in proc.stderr  # aiosqlite's SQL parameters: what the setting allows


def test_json_logs_are_one_object_a_line_without_content(tmp_path: Path) -> None:
    proc = chat(tmp_path, log_level="INFO", log_format="json")
    lines = [json.loads(line) for line in proc.stderr.splitlines() if line.strip()]
    assert lines, "expected some INFO lines"
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    assert "Osaka" not in proc.stderr
