"""Encryption at rest: the master key, per-person data keys and sealed text.

Each person has a data key (32 random bytes, AES-256-GCM). It is stored wrapped: sealed
with the master key (AES-256-GCM, bound to the person's id) in the `person_key` table.
What a person said and what is remembered about them is stored as
"enc1:" + urlsafe-base64(nonce + ciphertext), with associated data naming the kind of
row and the person, so a value cannot be moved to another column or another person
unnoticed. Plaintext (rows written before encryption, or with it off) reads as it is.
Destroying a person's key row makes everything sealed with it unreadable, backups
included, as long as the backups do not also hold that row (crypto-shredding).
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from brain.errors import ConfigError, StorageError

PREFIX = "enc1:"
KEY_BYTES = 32
NONCE_BYTES = 12
MASTER_KEY_FILE = "master.key"
SETTING = "TOMO_CRYPTO__MASTER_KEY"


class CryptoError(StorageError):
    """A sealed value that cannot be opened (its key is gone, the master key is not the
    one it was sealed under, or the stored value was altered)."""


@dataclass(frozen=True, kw_only=True)
class Encryption:
    """What the storage layer needs to seal and open rows."""

    master_key: bytes = b""
    # False: new rows are written in plaintext; sealed ones are still read.
    encrypt: bool = True
    # Unwrapped person keys are kept in memory this long (another process that forgets
    # a person is noticed at the latest after this) and at most this many of them.
    cache_ttl_s: float = 60.0
    cache_size: int = 10_000

    def __post_init__(self) -> None:
        if len(self.master_key) != KEY_BYTES:
            raise ConfigError(f"The master key must be {KEY_BYTES} bytes.")


def is_sealed(value: str) -> bool:
    return value.startswith(PREFIX)


def _ad(kind: str, person_id: int) -> bytes:
    return f"tomo/{kind}/{person_id}".encode()


def cipher(key: bytes) -> AESGCM:
    """A person's data key, ready to seal and open (made once per key: it is cached)."""
    return AESGCM(key)


def seal(key: AESGCM, text: str, *, kind: str, person_id: int) -> str:
    """`text` encrypted with a person's data key, bound to the row kind and person."""
    nonce = os.urandom(NONCE_BYTES)
    sealed = key.encrypt(nonce, text.encode(), _ad(kind, person_id))
    return PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode("ascii")


def open_sealed(key: AESGCM, value: str, *, kind: str, person_id: int) -> str:
    """The plaintext of a sealed value (a plaintext value is returned as it is)."""
    if not is_sealed(value):
        return value
    try:
        raw = base64.urlsafe_b64decode(value[len(PREFIX) :])
        if len(raw) < NONCE_BYTES + 16:
            raise ValueError("too short")
        plain = key.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], _ad(kind, person_id))
    except (InvalidTag, ValueError, binascii.Error, UnicodeError):
        raise CryptoError(
            f"A stored {kind} of person {person_id} cannot be decrypted with that person's "
            "key: it was written under a key that has since been destroyed (forgotten), "
            "or the stored value was altered."
        ) from None
    return plain.decode()


def new_data_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


def wrap(master_key: bytes, person_id: int, data_key: bytes) -> bytes:
    """A data key sealed with the master key, bound to its person."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(master_key).encrypt(nonce, data_key, _ad("person_key", person_id))


def unwrap(master_key: bytes, person_id: int, wrapped: bytes) -> bytes:
    """The data key of a person from its wrapped form (CryptoError: wrong master key)."""
    try:
        if len(wrapped) != NONCE_BYTES + KEY_BYTES + 16:
            raise ValueError("wrong length")
        key = AESGCM(master_key).decrypt(
            wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], _ad("person_key", person_id)
        )
    except (InvalidTag, ValueError):
        raise CryptoError(
            f"The data key of person {person_id} cannot be unwrapped with this master key: "
            f"{SETTING} (or {MASTER_KEY_FILE} in the data folder) is not the key this "
            "database was encrypted with. Restore the right master key; without it the "
            "encrypted messages, memories and profiles cannot be read."
        ) from None
    return key


# the master key ------------------------------------------------------------------------


def parse_master_key(text: str, *, source: str) -> bytes:
    """A master key as written in the setting or the key file: urlsafe base64 of 32 bytes."""
    try:
        key = base64.urlsafe_b64decode(text.strip().encode("ascii"))
    except (binascii.Error, ValueError, UnicodeError):
        key = b""
    if len(key) != KEY_BYTES:
        raise ConfigError(
            f"The master key in {source} is malformed: it must be the urlsafe base64 of "
            f'{KEY_BYTES} random bytes (make one with: python -c "import base64, os; '
            f'print(base64.urlsafe_b64encode(os.urandom(32)).decode())").'
        )
    return key


def format_master_key(key: bytes) -> str:
    return base64.urlsafe_b64encode(key).decode("ascii")


def load_master_key(configured: str | None, *, data_dir: Path, create: bool = True) -> bytes | None:
    """The master key: the setting when given, else `<data_dir>/master.key`, created
    (mode 0600, atomically: concurrent first starts agree on one) when missing and
    `create`. None when there is none and `create` is off."""
    if configured is not None:
        return parse_master_key(configured, source=SETTING)
    path = data_dir / MASTER_KEY_FILE
    try:
        return parse_master_key(path.read_text(encoding="ascii"), source=str(path))
    except FileNotFoundError:
        if not create:
            return None
    except (OSError, UnicodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(
            f"Cannot read the master key {path} ({why}). Fix its permissions (tomo needs "
            f"to read it), or set {SETTING}."
        ) from None
    return _create_master_key(path)


def _create_master_key(path: Path) -> bytes:
    key = new_data_key()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="ascii") as out:
                out.write(format_master_key(key) + "\n")
                out.flush()
                os.fsync(out.fileno())
            try:
                os.link(tmp, path)  # fails if another process made one first
            except FileExistsError:
                return parse_master_key(path.read_text(encoding="ascii"), source=str(path))
        finally:
            tmp.unlink(missing_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"Cannot create the master key {path} ({exc.strerror or exc}): make the data "
            f"folder writable, or set {SETTING}."
        ) from None
    return key
