"""Which database holds the ledger of a partition of the commands topic (``OGP_LEDGER_DATABASES``).

The ledger is sharded by partition in its logic already: a partition's batch is one transaction that touches
only that partition's accounts, and a transfer between partitions is a saga through Kafka. So the shard
boundary is a partition: each ledger database owns whole partitions, and a partition the map does not name
stays in the main database (``sqlalchemy_url``), which also holds everything that is not the ledger (users,
idempotency keys, Midtrans orders, read models). Pure: no connection is made here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy.engine import make_url

from ogp.settings import Settings

# The foreign key a ledger database other than the main one drops: its accounts' users live in the main one.
ACCOUNTS_USERS_FK = "fk_accounts_user_id_users"


@dataclass(frozen=True)
class LedgerShard:
    """One ledger database and the partitions whose ledger it holds (``main``: the main database too)."""

    url: str
    partitions: tuple[int, ...]
    main: bool

    @property
    def label(self) -> str:
        """Where it is, for people: host:port/database, never the password."""
        return label(self.url)


@dataclass(frozen=True)
class LedgerShards:
    """The partition → database map of one configuration."""

    main_url: str
    partitions: int
    owners: dict[int, str]  # the partitions the map names, and their database's URL

    @classmethod
    def from_settings(cls, settings: Settings) -> LedgerShards:
        owners = {p: e.url for e in settings.ledger_databases for p in range(e.first, e.last + 1)}
        return cls(settings.sqlalchemy_url, settings.commands_partitions, owners)

    @property
    def sharded(self) -> bool:
        """Whether any partition's ledger lives outside the main database."""
        return any(url != self.main_url for url in self.owners.values())

    def url_of(self, partition: int) -> str:
        """The URL of the database that holds ``partition``'s ledger."""
        return self.owners.get(partition, self.main_url)

    def shards(self, partitions: Iterable[int] | None = None) -> list[LedgerShard]:
        """The distinct ledger databases (the main one first) and the partitions of ``partitions`` (default:
        the topic's) each holds. The main database is listed even when it holds none: the audit reads it."""
        wanted = sorted(set(range(self.partitions) if partitions is None else partitions))
        by_url: dict[str, list[int]] = {self.main_url: []}
        for p in wanted:
            by_url.setdefault(self.url_of(p), []).append(p)
        for url in self.owners.values():
            by_url.setdefault(url, [])
        return [LedgerShard(url, tuple(ps), url == self.main_url) for url, ps in by_url.items()]


def label(url: str) -> str:
    """host:port/database of a database URL (no user, no password)."""
    u = make_url(url)
    return f"{u.host or 'localhost'}:{u.port or 5432}/{u.database or ''}"


def ranges(partitions: Iterable[int]) -> str:
    """Partitions as people write them: 0, 1, 2, 5 → "0-2, 5"."""
    out: list[list[int]] = []
    for p in sorted(partitions):
        if out and out[-1][1] == p - 1:
            out[-1][1] = p
        else:
            out.append([p, p])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in out) or "none"
