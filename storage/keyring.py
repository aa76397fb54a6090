"""The person keys of one database: read, created, cached, destroyed.

Unwrapped keys are kept in memory (least recently used dropped past `cache_size`) for
`cache_ttl_s` after they were read from the database, so a message costs no statement
for its key in steady state. A key destroyed or replaced by another process (a forget on
another worker) must not be used to write: the author's key is checked on every message
for free (the person lookup reads the wrapped key with the person, see `observe`), and
the writes off the per-message path (memories, profiles, edits) read the key afresh. A
read that fails with a cached key is tried once more with keys read afresh. Otherwise a
key destroyed elsewhere leaves this process's cache when its entry expires.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import sqlalchemy as sa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection

from brain.errors import StorageError
from storage.crypto import (
    CryptoError,
    Encryption,
    cipher,
    is_sealed,
    new_data_key,
    open_sealed,
    unwrap,
    wrap,
)
from storage.db import translate
from storage.tables import PersonKeyRow

if TYPE_CHECKING:
    from storage.database import Database

_KEY = PersonKeyRow.__table__  # type: ignore[attr-defined]
_SELECT = sa.select(_KEY.c.person_id, _KEY.c.wrapped_key).where(
    _KEY.c.person_id.in_(sa.bindparam("ids", expanding=True))
)
_INSERT = {
    "sqlite": sqlite.insert(_KEY).on_conflict_do_nothing(index_elements=["person_id"]),
    "postgresql": postgresql.insert(_KEY).on_conflict_do_nothing(index_elements=["person_id"]),
}
DELETE_KEY = sa.delete(_KEY).where(_KEY.c.person_id == sa.bindparam("pid"))
OPENED_KEPT = 10_000  # decrypted values kept (see Keyring.opened)


class Keyring:
    """The master key and the person keys of `database`, with their cache."""

    def __init__(
        self,
        encryption: Encryption,
        *,
        database: Database,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.encryption = encryption
        self.database = database
        self._clock = clock
        # person id -> (expires, wrapped key as stored, the unwrapped key ready to use)
        self._cache: OrderedDict[int, tuple[float, bytes, AESGCM]] = OrderedDict()
        # Values opened lately (the conversation window is read again for every
        # message): sealed value -> (the key that opened it, row kind, plaintext). Used
        # only while that very key is still the person's key.
        self.opened: OrderedDict[str, tuple[AESGCM, str, str]] = OrderedDict()

    @property
    def encrypt(self) -> bool:
        """Whether new rows are encrypted (sealed ones are read either way)."""
        return self.encryption.encrypt

    # the cache -------------------------------------------------------------------------

    def _cached(self, person_id: int) -> AESGCM | None:
        found = self._cache.get(person_id)
        if found is None:
            return None
        expires, _wrapped, key = found
        if self._clock() >= expires:
            del self._cache[person_id]
            return None
        self._cache.move_to_end(person_id)
        return key

    def _remember(self, person_id: int, wrapped: bytes) -> AESGCM:
        known = self._cache.get(person_id)
        if known is not None and known[1] == wrapped:
            ready = known[2]  # the same key: no need to unwrap it again
        else:
            ready = cipher(unwrap(self.encryption.master_key, person_id, wrapped))
        self._cache[person_id] = (self._clock() + self.encryption.cache_ttl_s, wrapped, ready)
        self._cache.move_to_end(person_id)
        while len(self._cache) > self.encryption.cache_size:
            self._cache.popitem(last=False)
        return ready

    def evict(self, person_id: int) -> None:
        gone = self._cache.pop(person_id, None)
        if gone is not None:
            key = gone[2]
            for value in [v for v, (k, _, _) in self.opened.items() if k is key]:
                del self.opened[value]

    def observe(self, person_id: int, wrapped: bytes | None) -> None:
        """The person's key as the database holds it now (read along with the person):
        a destroyed or replaced key leaves the cache, the current one is kept."""
        if wrapped is None:
            self.evict(person_id)
        else:
            self._remember(person_id, bytes(wrapped))

    # keys ------------------------------------------------------------------------------

    async def sealing_key(
        self,
        person_id: int,
        *,
        conn: AsyncConnection | None = None,
        create: bool = True,
        fresh: bool = False,
    ) -> AESGCM | None:
        """The key to encrypt `person_id`'s new rows with, created on first use; None
        when encryption is off (or the person has no key and not `create`). `fresh`:
        read from the database even when cached."""
        if not self.encrypt:
            return None
        key = None if fresh else self._cached(person_id)
        if key is not None:
            return key
        key = (await self._fetch([person_id], conn=conn)).get(person_id)
        if key is not None or not create:
            return key
        return await self._create(person_id, conn=conn)

    async def opening_keys(
        self,
        person_ids: Iterable[int],
        *,
        conn: AsyncConnection | None = None,
        fresh: bool = False,
    ) -> dict[int, AESGCM]:
        """The keys of those people that have one (one statement for those not cached,
        or for all with `fresh`)."""
        found: dict[int, AESGCM] = {}
        missing: list[int] = []
        for pid in set(person_ids):
            key = None if fresh else self._cached(pid)
            if key is None:
                missing.append(pid)
            else:
                found[pid] = key
        if missing:
            found.update(await self._fetch(sorted(missing), conn=conn))
        return found

    async def _fetch(self, ids: list[int], *, conn: AsyncConnection | None) -> dict[int, AESGCM]:
        if conn is not None:
            rows = (await conn.execute(_SELECT, {"ids": ids})).all()
        else:
            async with self.database.connect() as own:
                rows = (await own.execute(_SELECT, {"ids": ids})).all()
        found = {pid: self._remember(pid, bytes(wrapped)) for pid, wrapped in rows}
        for pid in set(ids) - set(found):
            self.evict(pid)
        return found

    async def _create(self, person_id: int, *, conn: AsyncConnection | None) -> AESGCM:
        wrapped = wrap(self.encryption.master_key, person_id, new_data_key())
        values = {"person_id": person_id, "wrapped_key": wrapped, "created_at": datetime.now(UTC)}
        statement = _INSERT[self.database.dialect]
        try:
            if conn is not None:
                made = (await conn.execute(statement, values)).rowcount == 1
            else:
                async with self.database.connect() as own:
                    made = (await own.execute(statement, values)).rowcount == 1
        except IntegrityError as exc:  # no such person (the foreign key)
            raise translate(exc, url=self.database.url) from None
        except SQLAlchemyError as exc:
            raise translate(exc, url=self.database.url) from None
        if made:
            return self._remember(person_id, wrapped)
        # another process made one first: use that one
        winner = (await self._fetch([person_id], conn=conn)).get(person_id)
        if winner is None:
            raise StorageError(f"The key of person {person_id} vanished while it was made.")
        return winner


class Opener:
    """Opens the sealed values of a set of rows with the keys read for them."""

    def __init__(
        self,
        keys: dict[int, AESGCM],
        *,
        keyring: bool,
        memo: OrderedDict[str, tuple[AESGCM, str, str]] | None = None,
    ) -> None:
        self._keys = keys
        self._keyring = keyring
        self._memo = memo

    def open(self, value: str, *, kind: str, owner: int | None) -> str:
        if not is_sealed(value):
            return value
        if owner is None:
            raise CryptoError(f"A stored {kind} is encrypted but names no person to open it.")
        key = self._keys.get(owner)
        if key is None:
            if not self._keyring:
                raise CryptoError(
                    "This database holds encrypted rows, but no master key was given to "
                    "read them: set TOMO_CRYPTO__MASTER_KEY (or keep master.key in the "
                    "data folder)."
                )
            raise CryptoError(
                f"The key of person {owner} is gone: it was destroyed when they asked "
                f"tomo to forget everything about them, so this {kind} can no longer be "
                "read."
            )
        memo = self._memo
        if memo is None:
            return open_sealed(key, value, kind=kind, person_id=owner)
        known = memo.get(value)
        if known is not None and known[0] is key and known[1] == kind:
            memo.move_to_end(value)
            return known[2]
        plain = open_sealed(key, value, kind=kind, person_id=owner)
        memo[value] = (key, kind, plain)
        if len(memo) > OPENED_KEPT:
            memo.popitem(last=False)
        return plain


PLAIN = Opener({}, keyring=False)
