"""Connections every service needs, created at start-up (never at import) and closed at shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from ogp.db.ledger_engines import LedgerEngines
from ogp.db.shards import LedgerShards
from ogp.db.statements import HotPathEngine, StatementPool, closed_by_server
from ogp.settings import Settings

log = logging.getLogger(__name__)


class KafkaUnavailable(RuntimeError):
    """The producer is not connected to the broker (yet)."""


@dataclass
class KafkaProducerManager:
    """An idempotent, acks=all producer that keeps trying to connect in the background.

    A service must start (and answer /health, /ready with 503) even while the broker is down.
    """

    bootstrap: str
    client_id: str
    append_timeout: float = 10.0  # seconds messaging.append waits for the acknowledgement
    _producer: AIOKafkaProducer | None = None
    _task: asyncio.Task | None = None
    _closing: bool = False

    def _new(self) -> AIOKafkaProducer:
        return AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            client_id=self.client_id,
            acks="all",
            enable_idempotence=True,
            linger_ms=2,
            request_timeout_ms=15000,
        )

    async def start(self, wait: float = 10.0) -> None:
        self._task = asyncio.create_task(self._connect_forever())
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._task), wait)

    async def _connect_forever(self) -> None:
        delay = 0.5
        while not self._closing:
            producer = self._new()
            try:
                await producer.start()
                self._producer = producer
                return
            except KafkaError as exc:
                log.warning("kafka producer not connected yet: %s", exc.__class__.__name__)
                with contextlib.suppress(Exception):
                    await producer.stop()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    @property
    def producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise KafkaUnavailable("not connected to Kafka")
        return self._producer

    async def check(self, timeout: float = 3.0) -> None:
        """Raise unless a metadata request to the broker succeeds now."""
        producer = self.producer
        ok = await asyncio.wait_for(producer.client.fetch_all_metadata(), timeout)
        if ok is None or not ok.brokers():
            raise KafkaUnavailable("metadata request returned no brokers")

    async def close(self) -> None:
        self._closing = True
        if self._task and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._producer is not None:
            with contextlib.suppress(Exception):
                await self._producer.stop()
            self._producer = None


@dataclass
class Clients:
    """The shared connections of one service process."""

    settings: Settings
    engine: AsyncEngine
    redis: aioredis.Redis
    kafka: KafkaProducerManager
    extras: dict = field(default_factory=dict)
    # The engine of each account's ledger database (the main engine unless OGP_LEDGER_DATABASES maps it elsewhere).
    ledger: LedgerEngines | None = None

    async def close(self) -> None:
        await self.kafka.close()
        await self.redis.aclose()
        if self.ledger is not None:
            await self.ledger.dispose()
        await self.engine.dispose()


def async_engine(url: str, *, hot_path: bool = False, statement_pool_size: int = 10, **kwargs) -> AsyncEngine:
    """An async SQLAlchemy engine on psycopg 3 (URLs with any postgres driver are accepted).

    ``hot_path``: the engine serves requests (the APIs), so a connection taken from the pool is checked without a
    round trip (``_drop_if_closed_by_server``) instead of SQLAlchemy's pre-ping, an extra round trip per checkout
    that cost the APIs 11-16% of their CPU per answer; and it comes with a pool of ``statement_pool_size`` psycopg
    connections in autocommit (a :class:`~ogp.db.statements.HotPathEngine`) for ``fetch_one``, checked the same
    way. Workers and the CLI keep the pre-ping: they check out per batch or per run, where it is not felt. See
    docs/architecture.md, "The APIs' pooled connections" and "One statement without SQLAlchemy".
    """
    u = make_url(url).set(drivername="postgresql+psycopg")
    # All kept once opened (opened on demand): an overflow connection is opened and closed per use, and
    # PostgreSQL forks a backend for each, which cost a loaded API more than its queries. At most 30 per engine,
    # as before: on the hot path, 20 for SQLAlchemy and ``statement_pool_size`` (10) for the one-statement pool.
    kwargs.setdefault("pool_size", 30 - statement_pool_size if hot_path else 30)
    kwargs.setdefault("max_overflow", 0)
    kwargs.setdefault("pool_pre_ping", not hot_path)
    engine = create_async_engine(u, **kwargs)
    if not hot_path:
        return engine
    event.listen(engine.sync_engine.pool, "connect", _mark_fresh)
    event.listen(engine.sync_engine.pool, "checkout", _drop_if_closed_by_server)
    # The same connection parameters as the engine's (and its psycopg adapters), without its pool.
    _, connect_kwargs = engine.dialect.create_connect_args(engine.url)
    statements = StatementPool(connect_kwargs, statement_pool_size, name=f"statements@{u.host}/{u.database}")
    return HotPathEngine(engine.sync_engine, statements)


_FRESH = "ogp_fresh"  # in a connection record's info (cleared when the connection is replaced): not yet checked out


def _mark_fresh(_dbapi_connection, record) -> None:
    record.info[_FRESH] = True


def _drop_if_closed_by_server(_dbapi_connection, record, proxy) -> None:
    """Make the pool replace a pooled connection the server has closed, before a statement is sent on it.

    ``closed_by_server`` tells it with one non-blocking ``poll``, no round trip. Raising ``DisconnectionError``
    here is SQLAlchemy's documented way to have the pool open a new connection in its place and check that one out
    (so no request sees the dead one). A connection just opened is not checked (as the pre-ping does not check
    it): a second failure would exhaust the pool's attempts into an error that is not a disconnect; its statement
    fails instead, as a database error (503).
    """
    if record.info.pop(_FRESH, False):
        return
    if closed_by_server(proxy.driver_connection):
        raise DisconnectionError("the server closed the connection")


async def open_clients(settings: Settings, client_id: str, *, read_only: bool = False) -> Clients:
    """``read_only``: the service never writes to PostgreSQL, so its statements run without transactions."""
    options: dict[str, Any] = {"isolation_level": "AUTOCOMMIT"} if read_only else {}
    engine = async_engine(settings.sqlalchemy_url, hot_path=True, **options)
    # The other ledger databases serve one account's row per request: smaller pools each (10 connections).
    ledger = LedgerEngines(
        LedgerShards.from_settings(settings),
        engine,
        lambda url: async_engine(url, hot_path=True, pool_size=5, statement_pool_size=5, **options),
    )
    redis = aioredis.Redis.from_url(settings.redis_dsn, socket_timeout=3, socket_connect_timeout=3)
    kafka = KafkaProducerManager(settings.kafka_bootstrap, client_id, settings.kafka_append_timeout_seconds)
    await kafka.start(wait=5.0)
    return Clients(settings=settings, engine=engine, redis=redis, kafka=kafka, ledger=ledger)
