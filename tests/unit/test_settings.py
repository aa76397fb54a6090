from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bots.app import build_model, load_persona
from bots.settings import Settings, masked
from brain.errors import ConfigError
from brain.llm.openai_compat import OpenAICompatModel
from brain.persona.card import DEFAULT_EMOTIONS


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key in list(os.environ):
        if key.startswith("TOMO_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


def test_defaults(tmp_path: Path) -> None:
    s = Settings()
    assert s.llm.backend == "llamacpp"
    assert s.effective_database_url == f"sqlite:///{s.data_dir / 'tomo.db'}"
    assert s.configured_platforms() == []


def test_environment_nested_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOMO_DATA_DIR", "/tmp/tomo-x")
    monkeypatch.setenv("TOMO_TELEGRAM__TOKEN", "123:secret-token")
    monkeypatch.setenv("TOMO_TELEGRAM__API_BASE", "http://127.0.0.1:8081")
    monkeypatch.setenv("TOMO_DISCORD__GATEWAY_URL", "ws://127.0.0.1:9000")
    monkeypatch.setenv("TOMO_QQ__ONEBOT_URL", "ws://127.0.0.1:3001")
    monkeypatch.setenv("TOMO_LLM__BACKEND", "openai")
    monkeypatch.setenv("TOMO_LLM__BASE_URL", "http://127.0.0.1:8000/v1")
    monkeypatch.setenv("TOMO_LLM__MODEL", "qwen")
    s = Settings()
    assert s.data_dir == Path("/tmp/tomo-x")
    assert s.telegram.token is not None
    assert s.telegram.token.get_secret_value() == "123:secret-token"
    assert s.telegram.api_base == "http://127.0.0.1:8081"
    assert s.discord.gateway_url == "ws://127.0.0.1:9000"
    assert s.configured_platforms() == ["telegram", "qq"]
    assert isinstance(build_model(s), OpenAICompatModel)


def test_toml_file_and_env_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "tomo.toml").write_text(
        'database_url = "sqlite:///from-toml.db"\n[llm]\nn_threads = 1\nmax_reply_tokens = 64\n'
    )
    monkeypatch.setenv("TOMO_LLM__N_THREADS", "2")
    s = Settings()
    assert s.database_url == "sqlite:///from-toml.db"
    assert s.llm.max_reply_tokens == 64
    assert s.llm.n_threads == 2  # the environment wins


def test_secrets_are_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOMO_DISCORD__TOKEN", "discord-very-secret")
    monkeypatch.setenv("TOMO_DATABASE_URL", "postgresql://tomo:pg-very-secret@db:5432/tomo")
    s = Settings()
    shown = json.dumps(masked(s))
    assert "discord-very-secret" not in shown
    assert "pg-very-secret" not in shown
    assert "discord-very-secret" not in repr(s)
    assert "discord-very-secret" not in str(s)
    assert masked(s)["discord"]["token"] == "**********"


def test_tomo_config_command_masks_secrets(tmp_path: Path) -> None:
    env = {**os.environ, "TOMO_TELEGRAM__TOKEN": "tg-very-secret", "TOMO_DATA_DIR": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-m", "bots", "config"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    data = json.loads(out)
    assert data["telegram"]["token"] == "**********"
    assert data["data_dir"] == str(tmp_path)
    assert "tg-very-secret" not in out


def test_bad_setting_is_a_clear_error(tmp_path: Path) -> None:
    env = {**os.environ, "TOMO_LLM__BACKEND": "magic", "TOMO_DATA_DIR": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-m", "bots", "config"], env=env, capture_output=True, text=True
    )
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: Bad configuration: TOMO_LLM__BACKEND")
    assert "Traceback" not in proc.stderr


def test_openai_backend_needs_url_and_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOMO_LLM__BACKEND", "openai")
    with pytest.raises(ConfigError, match="TOMO_LLM__BASE_URL"):
        build_model(Settings())


def test_bundled_persona_loads() -> None:
    card = load_persona(None)
    assert card.name == "Tomo"
    assert card.emotions == DEFAULT_EMOTIONS
    assert card.example_lines


def test_custom_persona_and_its_errors(tmp_path: Path) -> None:
    good = tmp_path / "p.yaml"
    good.write_text("name: Mochi\nself_description: A sleepy cat.\nsticker_rate: 0.5\n")
    assert load_persona(good).name == "Mochi"
    with pytest.raises(ConfigError, match="Cannot read the persona card"):
        load_persona(tmp_path / "missing.yaml")
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_persona(bad_yaml)
    invalid = tmp_path / "invalid.yaml"
    invalid.write_text("name: X\nself_description: Y\nsticker_rate: 3\nemotions: [happy]\n")
    with pytest.raises(ConfigError, match="sticker_rate") as info:
        load_persona(invalid)
    assert "emotions" in str(info.value)


def test_an_empty_variable_is_unset_not_an_empty_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOMO_TELEGRAM__TOKEN", "")
    monkeypatch.setenv("TOMO_HTTP__PORT", "")
    settings = Settings()
    assert settings.telegram.token is None
    assert settings.configured_platforms() == []
    assert settings.http.port is None
