"""The master key: from TOMO_CRYPTO__MASTER_KEY, else made once in the data folder."""

from __future__ import annotations

import base64
import os
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from bots.app import build_encryption
from bots.settings import Settings
from brain.errors import ConfigError
from storage.crypto import MASTER_KEY_FILE, format_master_key, load_master_key


def test_made_on_first_use_private_and_kept(tmp_path: Path) -> None:
    key = load_master_key(None, data_dir=tmp_path / "data")
    path = tmp_path / "data" / MASTER_KEY_FILE
    assert key is not None
    assert len(key) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert base64.urlsafe_b64decode(path.read_text().strip()) == key
    assert load_master_key(None, data_dir=tmp_path / "data") == key
    assert sorted(p.name for p in path.parent.iterdir()) == [MASTER_KEY_FILE]


def test_processes_starting_at_once_agree_on_one_key(tmp_path: Path) -> None:
    with ThreadPoolExecutor(8) as pool:
        keys = list(pool.map(lambda _: load_master_key(None, data_dir=tmp_path), range(16)))
    assert len(set(keys)) == 1
    assert [p.name for p in tmp_path.iterdir()] == [MASTER_KEY_FILE]  # no temporary left


def test_the_setting_wins_and_no_file_is_made(tmp_path: Path) -> None:
    key = os.urandom(32)
    assert load_master_key(format_master_key(key), data_dir=tmp_path) == key
    assert list(tmp_path.iterdir()) == []
    assert load_master_key(None, data_dir=tmp_path, create=False) is None


@pytest.mark.parametrize("text", ["", "not base64 at all!", format_master_key(b"short")])
def test_a_malformed_key_is_a_clear_error(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError, match="TOMO_CRYPTO__MASTER_KEY is malformed"):
        load_master_key(text, data_dir=tmp_path)
    (tmp_path / MASTER_KEY_FILE).write_text(text)
    with pytest.raises(ConfigError, match=f"{MASTER_KEY_FILE} is malformed"):
        load_master_key(None, data_dir=tmp_path)


def test_an_unreadable_key_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / MASTER_KEY_FILE).mkdir()  # unreadable as a file, even for root
    with pytest.raises(ConfigError, match="Cannot read the master key"):
        load_master_key(None, data_dir=tmp_path)


def test_settings_turn_encryption_on_by_default_and_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):
        if name.startswith("TOMO_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no tomo.toml
    off = Settings.model_validate({"data_dir": tmp_path, "crypto": {"enabled": False}})
    assert build_encryption(off) is None  # off, and no key to read old rows with
    on = build_encryption(Settings.model_validate({"data_dir": tmp_path}))
    assert on is not None
    assert on.encrypt
    assert (tmp_path / MASTER_KEY_FILE).is_file()
    still = build_encryption(off)  # off, but the key reads what was encrypted
    assert still is not None
    assert (still.encrypt, still.master_key) == (False, on.master_key)
    monkeypatch.setenv("TOMO_CRYPTO__MASTER_KEY", format_master_key(b"\x01" * 32))
    monkeypatch.setenv("TOMO_CRYPTO__KEY_CACHE_TTL_S", "5")
    given = build_encryption(Settings())
    assert given is not None
    assert (given.master_key, given.cache_ttl_s) == (b"\x01" * 32, 5.0)
