"""The async engine of the ledger database that holds an account (``OGP_LEDGER_DATABASES``), for the APIs.

With no map every account's ledger is in the main database and the main engine is the answer. With one, an
engine per other ledger database is made on first use (engines connect lazily) and disposed with the clients.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine

from ogp.db.shards import LedgerShard, LedgerShards
from schemas.topics import partition_for


@dataclass
class LedgerEngines:
    """The main engine, and one per ledger database other than the main one (``make`` opens it)."""

    shards: LedgerShards
    main: AsyncEngine
    make: Callable[[str], AsyncEngine]
    _made: dict[str, AsyncEngine] = field(default_factory=dict)

    def elsewhere(self, account_id: str) -> bool:
        """Whether ``account_id``'s ledger row lives outside the main database."""
        return self.shards.sharded and self.shards.url_of(self.partition_of(account_id)) != self.shards.main_url

    def partition_of(self, account_id: str) -> int:
        return partition_for(account_id, self.shards.partitions)

    def of_account(self, account_id: str) -> AsyncEngine:
        """The engine on the database that holds ``account_id``'s ledger (balance, transactions, entries)."""
        if not self.elsewhere(account_id):
            return self.main
        url = self.shards.url_of(self.partition_of(account_id))
        engine = self._made.get(url)
        if engine is None:
            engine = self._made[url] = self.make(url)
        return engine

    def of_partition(self, partition: int) -> AsyncEngine:
        """The engine on the database that holds ``partition``'s ledger (a dead letter is named by its partition)."""
        return self.of_url(self.shards.url_of(partition))

    def of_url(self, url: str) -> AsyncEngine:
        """The engine on the ledger database at ``url`` (the main engine for the main database's URL)."""
        if url == self.shards.main_url:
            return self.main
        engine = self._made.get(url)
        if engine is None:
            engine = self._made[url] = self.make(url)
        return engine

    def each(self) -> list[tuple[LedgerShard, AsyncEngine]]:
        """Every ledger database (the main one first, listed even when it holds no partition) with its engine:
        for the readers that sum or list over all of them."""
        return [(shard, self.of_url(shard.url)) for shard in self.shards.shards()]

    async def dispose(self) -> None:
        """Close the engines made here (the main one is its owner's to close)."""
        made, self._made = list(self._made.values()), {}
        for engine in made:
            await engine.dispose()


def ledger_engine(main: AsyncEngine, ledger: LedgerEngines | None, account_id: str) -> AsyncEngine:
    """The engine on ``account_id``'s ledger database: ``main`` where there are no ledger engines (a caller
    without clients) or no map."""
    return main if ledger is None else ledger.of_account(account_id)
