"""A test fake of the ledger processor for the model-based tests: Kafka partitions as queues, PostgreSQL as dicts.

It plays ``BatchService``'s part for one partition batch as the real one does: a fresh :class:`Book` loaded with
exactly what ``rules.needs()`` asks for (the looked-up sets set, so asking for anything else raises
MissingLookup), the commands applied in offset order, a command whose rule raises IdConflict rejected and the
batch applied again, then only what the SQL adapter persists (new rows, the columns it updates on changed rows,
entries, balances) written back, outcome events kept, and saga follow-ups appended to the queue of the
partition their key lives on. Any other exception from the core is a bug: it propagates and fails the test.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from ledger_processor.domain import rules, transfers
from ledger_processor.domain.book import ZERO, Account, Book, Entry, IdConflict, Policy, Transaction
from schemas.base import Message
from schemas.commands import Command

START = datetime(2026, 12, 1, tzinfo=UTC)


@dataclass
class Effect:
    """What applying one command changed in its book."""

    entries: list[Entry] = field(default_factory=list)
    accounts: set[str] = field(default_factory=set)  # balance or status changed
    created: set[str] = field(default_factory=set)  # new transactions
    changed: set[str] = field(default_factory=set)  # existing transactions whose status, revision or details moved
    outgoing: list[Message] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.entries or self.accounts or self.created or self.changed or self.outgoing)


@dataclass
class Delivery:
    """One record of a partition's log; ``first`` is the earlier delivery when this one is a redelivery."""

    offset: int
    command: Command
    first: Applied | None = None


@dataclass
class Applied:
    partition: int
    delivery: Delivery
    effect: Effect
    dead_lettered: bool = False
    status_version: int = 0  # ChangeAccountStatus: the account's status version right after it

    @property
    def command(self) -> Command:
        return self.delivery.command


@dataclass(frozen=True)
class DeadLetter:
    partition: int
    offset: int
    command: Command
    reason: str
    outcome_recorded: bool


def _load(tx: Transaction) -> Transaction:
    """A row as the store reads it: a fresh object, no flags, no command offset."""
    return dataclasses.replace(tx, details=copy.deepcopy(tx.details), is_new=False, changed=False, command_offset=None)


def _fingerprint(book: Book):
    accounts = {a.account_id: (a.balance, a.status) for a in book.accounts.values()}
    txs = {
        t.transaction_id: (t.status, t.revision, json.dumps(t.details, sort_keys=True, default=str))
        for t in book.transactions.values()
    }
    return len(book.entries), accounts, txs, len(book.outgoing)


def _effect(book: Book, before) -> Effect:
    n_entries, accounts, txs, n_out = before
    after_accounts = {a.account_id: (a.balance, a.status) for a in book.accounts.values()}
    effect = Effect(entries=book.entries[n_entries:], outgoing=[o.message for o in book.outgoing[n_out:]])
    # System accounts appear in the book (at zero) when first asked for: that alone is no change.
    effect.accounts = {i for i, state in after_accounts.items() if accounts.get(i, (ZERO, "ACTIVE")) != state}
    for t in book.transactions.values():
        state = (t.status, t.revision, json.dumps(t.details, sort_keys=True, default=str))
        if t.transaction_id not in txs:
            effect.created.add(t.transaction_id)
        elif txs[t.transaction_id] != state:
            effect.changed.add(t.transaction_id)
    return effect


class _Poison(Exception):
    def __init__(self, offset: int, reason: str):
        super().__init__(reason)
        self.offset, self.reason = offset, reason


class World:
    """Partitions of the commands topic and the ledger's tables, applied one partition batch at a time."""

    def __init__(self, partitions: int, partition_of: Callable[[str], int], policy: Policy | None = None):
        self.partitions = partitions
        self.partition_of = partition_of
        self.policy = policy or Policy()
        self.now = START
        self.queues: dict[int, deque[Delivery]] = {p: deque() for p in range(partitions)}
        self.next_offset = dict.fromkeys(range(partitions), 0)
        # The tables.
        self.accounts: dict[str, Account] = {}  # wallets
        self.system: dict[str, Account] = {}  # ledger_system_accounts
        self.transactions: dict[str, Transaction] = {}
        self.tx_partition: dict[str, int] = {}
        self.entries: list[Entry] = []
        self.dead_letters: list[DeadLetter] = []
        # What was published and applied, for the checks.
        self.events: list[Message] = []
        self.applied: list[Applied] = []
        self.status_moves: list[tuple[str, str, str]] = []  # (transaction, from, to) of every persisted change
        self.status_version: dict[str, int] = {}  # per wallet: how many status changes were applied

    # -- the log --------------------------------------------------------------------------------------
    def create_account(self, account_id: str, user_id: int) -> None:
        self.accounts[account_id] = Account(account_id, ZERO, user_id=user_id)

    def append(self, command: Command, first: Applied | None = None) -> None:
        """Append ``command`` to its account's partition, as Kafka's partitioner would."""
        partition = self.partition_of(command.account_id)
        self.queues[partition].append(Delivery(self.next_offset[partition], command, first))
        self.next_offset[partition] += 1

    def queued(self) -> int:
        return sum(len(q) for q in self.queues.values())

    # -- one batch ------------------------------------------------------------------------------------
    def process(self, partition: int, count: int) -> int:
        """Apply the next ``count`` records of ``partition`` as one batch; returns how many were applied."""
        queue = self.queues[partition]
        batch = [queue.popleft() for _ in range(min(count, len(queue)))]
        if not batch:
            return 0
        self.now += timedelta(seconds=1)
        poisoned: dict[int, str] = {}
        while True:
            try:
                self._apply_once(partition, batch, poisoned)
                return len(batch)
            except _Poison as poison:  # roll back, apply the batch again with that command rejected
                poisoned[poison.offset] = poison.reason

    def _apply_once(self, partition: int, batch: list[Delivery], poisoned: dict[int, str]) -> None:
        book = Book(partition=partition, now=self.now, partition_of=self.partition_of, policy=self.policy)
        owns = lambda account_id: self.partition_of(account_id) == partition  # noqa: E731 - mirrors the processor's own predicate
        account_ids: set[str] = set()
        tx_ids: set[str] = set()
        for delivery in batch:
            n = rules.needs(delivery.command, owns)
            account_ids |= n.accounts
            tx_ids |= n.transactions
        book.looked_up_accounts, book.looked_up_transactions = account_ids, tx_ids
        for account_id in sorted(account_ids):
            if account_id in self.accounts:
                row = self.accounts[account_id]
                book.accounts[account_id] = Account(account_id, row.balance, row.status, row.currency, row.user_id)
        for account_id, row in self.system.items():
            if account_id.endswith(f":p{partition:03d}"):
                book.accounts[account_id] = Account(account_id, row.balance, currency=row.currency, is_system=True)
        for tx_id in sorted(tx_ids):
            if tx_id in self.transactions:
                book.transactions[tx_id] = _load(self.transactions[tx_id])

        done: list[Applied] = []
        dead: list[DeadLetter] = []
        for delivery in batch:
            book.current_offset = delivery.offset
            before = _fingerprint(book)
            reason = poisoned.get(delivery.offset)
            if reason is None:
                try:
                    rules.apply(book, delivery.command)
                except IdConflict:
                    raise _Poison(delivery.offset, "transaction_id_conflict") from None
            else:
                outcome = rules.reject(book, delivery.command, reason)
                dead.append(DeadLetter(partition, delivery.offset, delivery.command, reason, outcome))
            done.append(Applied(partition, delivery, _effect(book, before), dead_lettered=reason is not None))
        self._save(book, partition)
        self.dead_letters += dead
        for applied in done:
            command = applied.command
            if command.TYPE == "ChangeAccountStatus" and applied.effect.accounts:
                self.status_version[command.account_id] = self.status_version.get(command.account_id, 0) + 1
            applied.status_version = self.status_version.get(command.account_id, 0)
        self.applied += done

    # -- the saga sweep -------------------------------------------------------------------------------
    def sweep(self, partition: int) -> int:
        """The owner's periodic sweep: ask the destination to settle every transfer of ``partition`` still
        in flight (the model's clock is adversarial: any PENDING transfer may have timed out)."""
        self.now += timedelta(seconds=1)
        stale = [
            _load(t)
            for i, t in self.transactions.items()
            if self.tx_partition[i] == partition and t.status == "PENDING" and t.transaction_type == "TRANSFER"
        ]
        if not stale:
            return 0
        book = Book(
            partition=partition,
            now=self.now,
            partition_of=self.partition_of,
            policy=self.policy,
            transactions={t.transaction_id: t for t in stale},
        )
        for tx in stale:
            transfers.request_expiry(book, tx)
        self._save(book, partition)
        return len(stale)

    def drain(self, max_rounds: int = 100) -> None:
        """Process every queue until all are empty (saga steps included)."""
        for _ in range(max_rounds):
            if not self.queued():
                return
            for p in range(self.partitions):
                self.process(p, len(self.queues[p]))
        raise AssertionError("the queues never emptied: a saga that loops")

    # -- what the store writes ------------------------------------------------------------------------
    def _save(self, book: Book, partition: int) -> None:
        for t in book.transactions.values():
            if t.is_new:
                assert t.transaction_id not in self.transactions, f"duplicate key {t.transaction_id}"
                self.transactions[t.transaction_id] = _load(t)
                self.tx_partition[t.transaction_id] = partition
                self.status_moves.append((t.transaction_id, "NEW", t.status))
            elif t.changed:
                row = self.transactions[t.transaction_id]
                self.status_moves.append((t.transaction_id, row.status, t.status))
                # Exactly the columns LedgerSQL.save updates.
                row.status, row.failure_reason = t.status, t.failure_reason
                row.balance_before, row.balance_after = t.balance_before, t.balance_after
                row.revision, row.details, row.updated_at = t.revision, copy.deepcopy(t.details), t.updated_at
        self.entries += book.entries
        for a in book.accounts.values():
            if a.is_system:
                if a.balance_changed:
                    self.system[a.account_id] = Account(a.account_id, a.balance, currency=a.currency, is_system=True)
            elif a.balance_changed or a.status_changed:
                row = self.accounts[a.account_id]  # an UPDATE of a missing row would be lost silently
                row.balance, row.status = a.balance, a.status
        for out in book.outgoing:
            if out.stream == "commands":
                self.append(out.message)
            else:
                self.events.append(out.message)

    # -- reading it back ------------------------------------------------------------------------------
    def balance(self, account_id: str) -> Decimal:
        row = self.accounts.get(account_id) or self.system.get(account_id)
        return row.balance if row else ZERO
