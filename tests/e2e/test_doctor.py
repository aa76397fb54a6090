"""`tomo doctor` as an operator runs it: a real process, real SQLite, Redis and ports."""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
from pathlib import Path

from storage.migrate import upgrade
from tests.conftest import free_port

TELEGRAM_TOKEN = "7301234567:AAHdoctorsecretdoctorsecretdoctorsec"


def doctor(cwd: Path, **settings: str) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOMO_")}
    env["COLUMNS"] = "400"  # one table row a line, so phrases are not folded
    env.update({f"TOMO_{k.upper()}": v for k, v in settings.items()})
    proc = subprocess.run(
        [sys.executable, "-m", "bots", "doctor"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, proc.stdout + proc.stderr


def row(output: str, check: str) -> str:
    """The table line of `check`."""
    return next(line for line in output.splitlines() if line.startswith(f"│ {check} "))


def test_a_good_setup_passes(tmp_path: Path, redis_url: str) -> None:
    data = tmp_path / "data"
    upgrade(f"sqlite:///{data / 'tomo.db'}")
    code, out = doctor(
        tmp_path,
        data_dir=str(data),
        llm__backend="stub",
        redis_url=redis_url,
        telegram__token=TELEGRAM_TOKEN,
        http__port=str(free_port()),
    )
    assert code == 0, out
    assert "Everything looks right." in out
    assert "schema at the newest migration" in row(out, "database")
    assert "answers (Redis" in row(out, "redis")
    assert "ok" in row(out, "telegram")
    assert "is free" in row(out, "http port")
    assert TELEGRAM_TOKEN.split(":")[1] not in out


def test_problems_are_named_with_their_fix_and_no_secret(tmp_path: Path) -> None:
    dead = free_port()
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        code, out = doctor(
            tmp_path,
            data_dir=str(tmp_path / "data"),
            database_url=f"postgresql://tomo:pg-secret-77@127.0.0.1:{dead}/tomo",
            llm__model_path=str(tmp_path / "missing.gguf"),
            redis_url=f"redis://:redis-secret-88@127.0.0.1:{dead}/0",
            telegram__token="not-a-token-tg-secret-99",
            http__port=str(busy.getsockname()[1]),
        )
    finally:
        busy.close()
    assert code == 1
    assert "problem" in row(out, "database")
    assert "Check TOMO_DATABASE_URL" in row(out, "database")
    assert "missing.gguf does not exist. Fix or unset TOMO_LLM__MODEL_PATH" in row(out, "model")
    assert "Fix: start Redis or correct TOMO_REDIS_URL" in row(out, "redis")
    assert "copy it again from @BotFather" in row(out, "telegram")
    assert "set TOMO_HTTP__PORT to a free port" in row(out, "http port")
    assert "problems found" in out
    for secret in ("pg-secret-77", "redis-secret-88", "tg-secret-99"):
        assert secret not in out


def test_a_database_not_yet_migrated_says_run_migrate(tmp_path: Path) -> None:
    code, out = doctor(tmp_path, data_dir=str(tmp_path / "data"), llm__backend="stub")
    assert code == 1
    assert "Fix: run `tomo migrate`" in row(out, "database")


def test_a_configuration_that_does_not_load_is_reported_clearly(tmp_path: Path) -> None:
    code, out = doctor(tmp_path, llm__n_ctx="12", limits__person_burst="none")
    assert code == 1
    line = row(out, "configuration")
    assert "TOMO_LLM__N_CTX: Input should be greater than or equal to 256" in line
    assert "TOMO_LIMITS__PERSON_BURST" in line


def test_the_master_key_is_checked_and_never_shown(tmp_path: Path) -> None:
    data = tmp_path / "data"
    upgrade(f"sqlite:///{data / 'tomo.db'}")
    code, out = doctor(tmp_path, data_dir=str(data), llm__backend="stub")
    assert code == 0, out
    assert "master.key is made at the first start" in row(out, "encryption")
    code, out = doctor(
        tmp_path, data_dir=str(data), llm__backend="stub", crypto__master_key="short-key-secret-11"
    )
    assert code == 1
    assert "TOMO_CRYPTO__MASTER_KEY is malformed" in row(out, "encryption")
    assert "short-key-secret-11" not in out
    good = base64.urlsafe_b64encode(bytes(range(32))).decode()
    code, out = doctor(tmp_path, data_dir=str(data), llm__backend="stub", crypto__master_key=good)
    assert code == 0, out
    assert "master key from TOMO_CRYPTO__MASTER_KEY" in row(out, "encryption")
    assert good not in out
