"""What the ledger processor shows on ``/metrics`` (the families of ``ogp/metrics.py``).

Two kinds of figures:
- per committed batch, from the outcomes the batch service already collects (``BatchResult``): commands applied by
  type and outcome, money moved in minor units, dead letters by reason, batch size and duration. One call per
  label per batch, never per command.
- per owned partition, refreshed periodically by the runner beside its loop (never under the batch lock): the
  lag (the commands topic's end offset minus the position of record in ``ledger_partitions``), the unpublished
  outbox and the sagas in flight, with their oldest ages. A partition's series are removed when it is revoked
  or fenced, so a partition that moved is reported once, by its new owner.
"""

from __future__ import annotations

import contextlib

from ledger_processor.batch import BatchResult
from ledger_processor.sql import Backlog
from ogp.metrics import (
    DEAD_LETTERS,
    LEDGER_AMOUNT_MINOR,
    LEDGER_APPLIED,
    LEDGER_BATCH_DURATION,
    LEDGER_BATCH_SIZE,
    LEDGER_LAG,
    OUTBOX_BACKLOG_ROWS,
    OUTBOX_OLDEST_AGE,
    SAGA_OLDEST_AGE,
    SAGAS_IN_FLIGHT,
)

_PARTITION_GAUGES = (LEDGER_LAG, OUTBOX_BACKLOG_ROWS, OUTBOX_OLDEST_AGE, SAGAS_IN_FLIGHT, SAGA_OLDEST_AGE)


def record_batch(result: BatchResult, size: int, seconds: float) -> None:
    """A committed batch of ``size`` records that took ``seconds``."""
    LEDGER_BATCH_SIZE.observe(size)
    LEDGER_BATCH_DURATION.observe(seconds)
    for (command_type, outcome), count in result.outcomes.items():
        LEDGER_APPLIED.labels(command_type, outcome).inc(count)
    for transaction_type, minor in result.amounts_minor.items():
        LEDGER_AMOUNT_MINOR.labels(transaction_type).inc(minor)
    for reason, count in result.dead_letter_reasons.items():
        DEAD_LETTERS.labels(reason).inc(count)


def show_partition(backlog: Backlog, end_offset: int) -> int:
    """One owned partition's gauges: its lag against ``end_offset`` (the topic's end) and what waits on it.
    Returns the lag."""
    label = str(backlog.partition)
    lag = max(end_offset - backlog.next_offset, 0)
    LEDGER_LAG.labels(label).set(lag)
    OUTBOX_BACKLOG_ROWS.labels(label).set(backlog.outbox_rows)
    OUTBOX_OLDEST_AGE.labels(label).set(backlog.outbox_oldest_age)
    SAGAS_IN_FLIGHT.labels(label).set(backlog.sagas_in_flight)
    SAGA_OLDEST_AGE.labels(label).set(backlog.saga_oldest_age)
    return lag


def forget_partition(partition: int) -> None:
    """A partition this process no longer owns: its series go (its new owner reports them)."""
    for gauge in _PARTITION_GAUGES:
        with contextlib.suppress(KeyError):  # never shown here: nothing to remove
            gauge.remove(str(partition))
