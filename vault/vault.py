"""The vault: tokenize an account, reveal it for a provider call, delete it, rotate keys.

Invariants:

- A clear number exists only in memory: it arrives in :meth:`Vault.tokenize` and leaves
  :meth:`Vault.reveal` for the provider call; the database holds its ciphertext, its
  masked form and its keyed fingerprint (the same HMAC the payments store keeps).
- Every value is encrypted under the newest data key this process knows (re-read at most
  every ``primary_refresh_s``, so ``paygate keys rotate`` reaches every process within that),
  with a fresh nonce, bound to its token, client and account type.
- A token opens only within its client's scope; another client's token, a deleted or an
  expired one are all ``payment_method_not_found``, alike.
- A number is handed out for a provider call only while its token is live: in the
  database, in the caller's scope, not expired, checked by a query begun after the call
  asked. With ``recent`` (the consumer), a number this process vaulted moments ago is taken
  from memory (vault.recent_numbers: bounded, at most seconds) instead of being read and
  decrypted again (or one its intake just decrypted to check a token opens), but that
  liveness query is still asked first: a token deleted, expired or erased meanwhile is
  refused alike.
- A value lands only under a live data key: a token's insert, or a rewrap's swap, whose key
  was retired after the value was sealed is refused by its rows (the retire and the write
  serialize on the key's row), and the value sealed again under the newest key; a retire
  never waits on time alone for values on their way (tests/integration/
  test_vault_retire_race.py). A token inserted with its payment's begin
  (:meth:`tokenize_along`) is checked alike: the begin fails, writing nothing, and the
  command is admitted again under the newest key.
- A shredded client's tokens stay gone: every insert of a token, with its payment's begin
  or alone, is refused (``client_shredded``) once the client's shred has committed, and
  one that committed before is deleted by it (vault.rows; tests/integration/
  test_vault_shred_race.py).
- Deleting a token deletes its ciphertext: nothing in the live database can bring the
  number back. Copies in backups are unreadable once their data key is retired (rotate,
  rewrap, retire: docs/security.md).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy.ext.asyncio import AsyncEngine

from domain.accounts import Account, AccountType
from domain.clock import utc_now
from domain.errors import PaygateError
from domain.vaulted import VaultedAccount, new_token, payment_method_not_found
from persistence.group_commit import Bulk
from persistence.vault_key_guard import KeyRetiredError
from vault import cipher
from vault.errors import key_unknown, tampered
from vault.kek import KeyEncryptionKeys, WrappedKey
from vault.recent_numbers import RecentNumbers
from vault.rows import EntryRow, KeyRow, VaultStorage

DATA_KEY_KIND: Final = "data key"
DEFAULT_PRIMARY_REFRESH_S: Final = 30.0
# A seal refused because its key was retired meanwhile is made again under the newest key;
# a second refusal (another retire within the same insert) is an error, not a loop.
_SEALS_PER_TOKENIZE: Final = 2


class KeyInUseError(RuntimeError):
    """A data key cannot be retired while values are encrypted under it."""


class NoSuchKeyError(LookupError):
    """No data key has this id."""


@dataclass(frozen=True, slots=True)
class DataKeyInfo:
    """What may be shown about a data key: never the key."""

    key_id: str
    kek_id: str
    created_at: datetime
    retired_at: datetime | None
    values: int

    @property
    def active(self) -> bool:
        return self.retired_at is None


@dataclass(frozen=True, slots=True)
class RewrapReport:
    keys_rewrapped: int
    values_moved: int
    values_failed: int


def _context(token: str, client_id: str | None, account_type: str) -> bytes:
    return "\x1f".join((token, client_id or "", account_type)).encode()


def _info(row: KeyRow) -> DataKeyInfo:
    return DataKeyInfo(row.key_id, row.kek_id, row.created_at, row.retired_at, row.values)


class Vault:
    def __init__(
        self,
        rows: VaultStorage,
        keks: KeyEncryptionKeys,
        fingerprint_key: bytes,
        *,
        clock: Callable[[], datetime] = utc_now,
        primary_refresh_s: float = DEFAULT_PRIMARY_REFRESH_S,
        recent: RecentNumbers | None = None,
    ) -> None:
        """``recent``: where :meth:`tokenize` leaves each number for the :meth:`reveal`
        that follows in this process (the consumer's intake and provider call); None (the
        facade, the CLI) holds no number after :meth:`tokenize` returns."""
        self._rows = rows
        self._recent = recent
        self._keks = keks
        self._fingerprint_key = fingerprint_key
        self._clock = clock
        self._primary_refresh_s = primary_refresh_s
        self._data_keys: dict[str, AESGCM] = {}
        self._primary: str | None = None
        self._primary_read_at = 0.0
        self._primary_lock = asyncio.Lock()

    # --- values ------------------------------------------------------------------------

    async def tokenize(
        self,
        account: Account,
        *,
        client_id: str | None,
        saved: bool = False,
        expires_in: timedelta | None = None,
    ) -> VaultedAccount:
        """Store ``account``'s number encrypted; its token, masked number and fingerprint.

        ``saved``: kept for reuse until deleted. Otherwise ``expires_in`` (the retention)
        says when the retention job crypto-shreds it; a token made for one payment gets it.
        """
        for _ in range(_SEALS_PER_TOKENIZE):
            vaulted, entry = await self._sealed(
                account, client_id=client_id, saved=saved, expires_in=expires_in
            )
            try:
                await self._rows.add_entry(entry)
            except KeyRetiredError:
                # Sealed under a key retired before the row landed (a slow insert, or this
                # process's newest key stale): sealed again under the newest key, read now.
                self._primary_read_at = 0.0
                continue
            self._hold(entry, account)  # only now: its row is committed
            return vaulted
        raise key_unknown(DATA_KEY_KIND, entry.key_id)

    async def tokenize_along(
        self, account: Account, *, client_id: str | None, expires_in: timedelta
    ) -> tuple[VaultedAccount, Bulk | None]:
        """As :meth:`tokenize` (not saved), but the row's write is handed back, for the
        caller to run in the transaction that first names the token (PaymentStore.begin's
        ``along``), instead of a commit of its own before it.

        Invariant: the token is not usable until that transaction commits; a caller whose
        transaction fails, or whose begin finds its payment already begun (and so runs no
        write of it), has made a token that names nothing. None: the vault's rows are in
        another database, and the row is already committed here.

        The number is held (``recent``) before the row commits: a held number is only ever
        handed out by :meth:`reveal` after a query finds its token live, which a token whose
        transaction failed never is, so holding it early cannot make a charge.

        The write handed back checks the data key is still live, as :meth:`tokenize`'s
        insert does: a begin that lands after the key was retired fails with
        ``KeyRetiredError`` and writes nothing, and its caller admits the command again
        after :meth:`newest_key_id` (consumer.account_intake.AdmittedPayments).
        """
        for _ in range(_SEALS_PER_TOKENIZE):
            vaulted, entry = await self._sealed(
                account, client_id=client_id, saved=False, expires_in=expires_in
            )
            write = self._rows.entry_write(entry)
            if write is None:
                try:
                    await self._rows.add_entry(entry)
                except KeyRetiredError:
                    self._primary_read_at = 0.0  # as tokenize: sealed again, key read now
                    continue
            self._hold(entry, account)
            return vaulted, write
        raise key_unknown(DATA_KEY_KIND, entry.key_id)

    def _hold(self, entry: EntryRow, account: Account) -> None:
        if self._recent is not None:
            self._recent.put(
                entry.token, account, client_id=entry.client_id, expires_at=entry.expires_at
            )

    async def _sealed(
        self,
        account: Account,
        *,
        client_id: str | None,
        saved: bool,
        expires_in: timedelta | None,
    ) -> tuple[VaultedAccount, EntryRow]:
        key_id = await self._primary_key_id()
        token = new_token()
        ref = account.ref(self._fingerprint_key)
        ciphertext = cipher.encrypt(
            await self._data_key(key_id),
            key_id,
            account.number.encode(),
            _context(token, client_id, account.type.value),
        )
        entry = EntryRow(
            token=token,
            client_id=client_id,
            account_type=account.type.value,
            masked=ref.masked,
            fingerprint=ref.fingerprint,
            key_id=key_id,
            ciphertext=ciphertext,
            saved=saved,
            created_at=self._clock(),
            expires_at=None if saved or expires_in is None else self._clock() + expires_in,
        )
        vaulted = VaultedAccount(
            account.type, token, ref.masked, ref.fingerprint, account.holder_name
        )
        return vaulted, entry

    async def describe(
        self, token: str, *, client_id: str | None, holder_name: str | None = None
    ) -> VaultedAccount:
        """The vaulted account of ``token`` without decrypting it (``payment_method_not_found``
        unless it is the client's and live)."""
        entry = await self._live_entry(token, client_id)
        return VaultedAccount(
            AccountType(entry.account_type), token, entry.masked, entry.fingerprint, holder_name
        )

    async def reveal(self, account: VaultedAccount, *, client_id: str | None) -> Account:
        """The clear account, for a provider call only: never store, log or publish it.

        ``payment_method_not_found`` unless the token is live now, whether the number is
        held from this process's :meth:`tokenize` (then only the token's liveness is read,
        and nothing decrypted) or read and decrypted from its row."""
        held = None if self._recent is None else self._recent.take(account.token, client_id)
        if held is not None:
            expired = held.expires_at is not None and held.expires_at <= self._clock()
            if expired or not await self._rows.is_live(account.token, client_id):
                raise payment_method_not_found()
            return Account(held.account.type, held.account.number, account.holder_name)
        entry = await self._live_entry(account.token, client_id)
        number = await self._open(entry)
        return Account(AccountType(entry.account_type), number, account.holder_name)

    async def check_opens(
        self, token: str, *, client_id: str | None, holder_name: str | None = None
    ) -> VaultedAccount:
        """Like :meth:`describe`, after checking the number decrypts, so a broken entry is
        refused before a payment is accepted. The number is then dropped, or, with
        ``recent`` (the consumer's intake), held for the :meth:`reveal` of the provider
        call that follows, which still checks the token is live."""
        entry = await self._live_entry(token, client_id)
        number = await self._open(entry)
        account_type = AccountType(entry.account_type)
        # entry is the token's row in client_id's scope (_live_entry): held as tokenize holds.
        self._hold(entry, Account(account_type, number, holder_name))
        return VaultedAccount(account_type, token, entry.masked, entry.fingerprint, holder_name)

    async def delete(self, token: str, *, client_id: str | None) -> bool:
        """Crypto-shred one token; False if it was not the client's or did not exist."""
        return await self._rows.delete_entry(token, client_id)

    async def delete_client(self, client_id: str) -> int:
        """Crypto-shred every token of a client (a client that leaves); how many. From
        then on no token of the client is stored (``client_shredded``), whatever was on its
        way, until :meth:`unshred_client`."""
        return await self._rows.delete_client(client_id, self._clock())

    async def unshred_client(self, client_id: str) -> bool:
        """Let tokens of a shredded client be stored again; False if it was not shredded."""
        return await self._rows.unshred_client(client_id)

    async def delete_expired(self, *, batch: int = 500) -> int:
        """Crypto-shred every token whose expiry has passed; how many."""
        total = 0
        while True:
            deleted = await self._rows.delete_expired(self._clock(), batch)
            total += deleted
            if deleted < batch:
                return total

    async def _live_entry(self, token: str, client_id: str | None) -> EntryRow:
        entry = await self._rows.entry(token, client_id)
        if entry is None or (entry.expires_at is not None and entry.expires_at <= self._clock()):
            raise payment_method_not_found()
        return entry

    async def _open(self, entry: EntryRow) -> str:
        key_id = cipher.key_id_of(entry.ciphertext)
        if key_id != entry.key_id:
            # The blob and its row disagree on the key: one of them was altered.
            raise tampered("the stored account number")
        plain = cipher.decrypt(
            await self._data_key(key_id),
            entry.ciphertext,
            _context(entry.token, entry.client_id, entry.account_type),
        )
        return plain.decode()

    # --- other secrets under the same data keys ------------------------------------------

    async def seal(self, plain: bytes, context: bytes) -> tuple[str, bytes]:
        """``plain`` encrypted under the newest data key: its key id and ciphertext, bound
        to ``context`` (which must name the kind of value and its row, so a ciphertext
        opens nowhere else). For secrets paygate keeps outside the vault's tables (webhook
        signing secrets): they rotate with its keys, through their owner's rewrap.

        The newest key is read afresh, not taken from the cache tokenize uses: a key cached
        from before a rotation may be retired (its bytes erased) by now, and a secret sealed
        under it would never open again. Sealing is rare (an endpoint's creation, an
        upgrade's or a rewrap's pass), so the read costs nothing that matters."""
        key_id = await self.newest_key_id()
        return key_id, cipher.encrypt(await self._data_key(key_id), key_id, plain, context)

    async def unseal(self, key_id: str, ciphertext: bytes, context: bytes, *, what: str) -> bytes:
        """What :meth:`seal` sealed: ``encryption_key_unknown`` if its data key is unknown or
        retired, ``encryption_key_mismatch`` if its key-encryption key does not open that
        key, ``account_data_tampered`` (about ``what``) if anything bound to it changed."""
        if cipher.key_id_of(ciphertext, what) != key_id:
            raise tampered(what)
        return cipher.decrypt(await self._data_key(key_id), ciphertext, context, what)

    async def keys_beside(self, engine: AsyncEngine) -> bool:
        """Whether this vault's data keys are in ``engine``'s database (asked of the
        databases, not their URLs): a value sealed by :meth:`seal` and written there can
        then be refused, in its write's transaction, once its key is retired
        (persistence.vault_key_guard)."""
        return await self._rows.beside(engine)

    async def newest_key_id(self) -> str:
        """The data key :meth:`seal` uses now (re-read as :meth:`rewrap` does)."""
        self._primary_read_at = 0.0
        return await self._primary_key_id()

    # --- keys --------------------------------------------------------------------------

    async def rotate(self) -> DataKeyInfo:
        """A new data key, wrapped by the current key-encryption key; new values use it."""
        key_id = "dk_" + secrets.token_hex(8)
        data_key = AESGCM.generate_key(bit_length=256)
        wrapped = await self._keks.wrap(data_key, data_key_id=key_id)
        row = KeyRow(key_id, wrapped.kek_id, wrapped.wrapped, self._clock(), None)
        await self._rows.add_key(row)
        self._data_keys[key_id] = AESGCM(data_key)
        self._primary, self._primary_read_at = key_id, time.monotonic()
        return _info(row)

    async def keys(self) -> list[DataKeyInfo]:
        return [_info(row) for row in await self._rows.keys()]

    async def rewrap(self, *, batch: int = 500) -> RewrapReport:
        """Move everything to the newest keys: every live data key wrapped by the current
        key-encryption key, every value re-encrypted under the newest data key.

        Safe to run while the service runs, and to interrupt: each value is swapped in its
        own transaction, only if it did not change meanwhile. A value that does not open
        is left as it is and counted as failed (the report says how many).
        """
        keys_rewrapped = 0
        for row in await self._rows.keys():
            if row.retired_at is not None or row.wrapped_key is None:
                continue
            if row.kek_id != self._keks.current_id:
                data_key = await self._keks.unwrap(
                    WrappedKey(row.kek_id, row.wrapped_key), data_key_id=row.key_id
                )
                wrapped = await self._keks.wrap(data_key, data_key_id=row.key_id)
                await self._rows.rewrap_key(row.key_id, wrapped.kek_id, wrapped.wrapped)
                keys_rewrapped += 1
        self._primary_read_at = 0.0
        target = await self._primary_key_id()
        moved = failed = 0
        seen_failed: set[str] = set()
        while True:
            entries = [
                e
                for e in await self._rows.entries_not_under(target, batch + len(seen_failed))
                if e.token not in seen_failed
            ]
            if not entries:
                return RewrapReport(keys_rewrapped, moved, failed)
            for entry in entries:
                context = _context(entry.token, entry.client_id, entry.account_type)
                try:
                    number = await self._open(entry)
                except PaygateError:  # counted, and left for a person to look at
                    seen_failed.add(entry.token)
                    failed += 1
                    continue
                ciphertext = cipher.encrypt(
                    await self._data_key(target), target, number.encode(), context
                )
                try:
                    if await self._rows.replace_ciphertext(
                        entry.token, entry.client_id, entry.key_id, target, ciphertext
                    ):
                        moved += 1
                except KeyRetiredError:
                    # The target was rotated past and retired while this pass ran (it
                    # refuses the newest key, so a newer one exists): move to that instead.
                    target = await self.newest_key_id()
                    break

    async def retire(self, key_id: str) -> DataKeyInfo:
        """Destroy a data key no value uses any more (run ``rewrap`` first)."""
        row = await self._rows.key(key_id)
        if row is None:
            raise NoSuchKeyError(key_id)
        if row.retired_at is None and await self._primary_key_id() == key_id:
            raise KeyInUseError(f"{key_id} is the newest data key: rotate first")
        if row.retired_at is None:
            await self._refuse_while_still_newest_somewhere(row)
        if not await self._rows.retire_key(key_id, self._clock()):
            raise KeyInUseError(
                f"values or webhook signing secrets are still encrypted under {key_id}: "
                "run rewrap first"
            )
        self._data_keys.pop(key_id, None)
        retired = await self._rows.key(key_id)
        assert retired is not None
        return _info(retired)

    async def _refuse_while_still_newest_somewhere(self, row: KeyRow) -> None:
        """A process re-reads the newest key only every ``primary_refresh_s``: one that
        read ``row`` just before its successor was made encrypts new values under it until
        then. A retire within that window would pass the "no value under it" check and
        erase the key that such values need, after which they never open again. So the
        key's successor must be older than twice that interval (twice: for hosts whose
        clocks disagree), and the values made meanwhile moved by a rewrap run after it."""
        ordered = await self._rows.keys()  # oldest first
        position = [k.key_id for k in ordered].index(row.key_id)
        successors = ordered[position + 1 :]
        if not successors:
            raise KeyInUseError(f"{row.key_id} is the newest data key: rotate first")
        replaced_at = successors[0].created_at
        settled_at = replaced_at + timedelta(seconds=2 * self._primary_refresh_s)
        if self._clock() < settled_at:
            raise KeyInUseError(
                f"{row.key_id} was the newest data key until {replaced_at.isoformat()}: "
                f"processes may encrypt under it until {settled_at.isoformat()}; "
                "retire it after that, once a rewrap run after that has moved its values"
            )

    def _fresh_primary(self) -> str | None:
        if self._primary is None:
            return None
        if time.monotonic() - self._primary_read_at >= self._primary_refresh_s:
            return None
        return self._primary

    async def _primary_key_id(self) -> str:
        primary = self._fresh_primary()
        if primary is not None:
            return primary
        # One reader at a time: the tokenizations waiting meanwhile take its answer instead
        # of each reading the key again (the consumer has hundreds in flight) or, on a
        # fresh database, each making a first data key of its own.
        async with self._primary_lock:
            primary = self._fresh_primary()
            if primary is not None:
                return primary
            now = time.monotonic()
            row = await self._rows.newest_active_key()
            if row is None:
                # The first value ever: `make dev` needs no key set-up.
                return (await self.rotate()).key_id
            self._primary, self._primary_read_at = row.key_id, now
            return row.key_id

    async def _data_key(self, key_id: str) -> AESGCM:
        aead = self._data_keys.get(key_id)
        if aead is not None:
            return aead
        row = await self._rows.key(key_id)
        if row is None or row.wrapped_key is None:
            raise key_unknown(DATA_KEY_KIND, key_id)
        data_key = await self._keks.unwrap(
            WrappedKey(row.kek_id, row.wrapped_key), data_key_id=key_id
        )
        aead = AESGCM(data_key)
        self._data_keys[key_id] = aead
        return aead
