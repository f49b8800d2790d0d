"""The transfer saga: a transfer between wallets on two partitions, as a loop of commands through Kafka.

The rules of each step are pure and live in ``ledger_processor/domain/transfers.py`` (with the entries each
step posts); this module writes down the states, the loop that carries the steps between partitions, and
holds the one step no command starts: the timeout.

States of the two records (p: the source's partition, q: the destination's; ``a``: the amount)

| record          | state   | on                                   | becomes                    | sends             |
|-----------------|---------|--------------------------------------|----------------------------|-------------------|
| ``<id>`` (p)    | (none)  | RequestTransfer, destination on p    | SUCCESS (one posting)      | -                 |
|                 | (none)  | RequestTransfer, destination on q    | PENDING, a in flight on p  | CreditTransfer→q  |
|                 | (none)  | RequestTransfer, source cannot pay   | FAILED                     | -                 |
|                 | PENDING | ConfirmTransfer                      | SUCCESS                    | -                 |
|                 | PENDING | ReverseTransfer                      | FAILED, a back (``:rev``)  | -                 |
|                 |         |                                      | or to suspense if closed   |                   |
|                 | PENDING | the sweep: saga timeout passed       | PENDING, expiry requested  | ExpireTransfer→q  |
|                 | final   | Confirm or Reverse (duplicate)       | unchanged                  | -                 |
| ``<id>:in`` (q) | (none)  | CreditTransfer, destination can take | SUCCESS, a credited        | ConfirmTransfer→p |
|                 | (none)  | CreditTransfer refused, or rejected  | FAILED, for good           | ReverseTransfer→p |
|                 | (none)  | ExpireTransfer                       | FAILED, transfer_timed_out | ReverseTransfer→p |
|                 | SUCCESS | ExpireTransfer                       | unchanged                  | ConfirmTransfer→p |
|                 | FAILED  | ExpireTransfer                       | unchanged                  | ReverseTransfer→p |
|                 | final   | CreditTransfer (late, duplicate)     | unchanged                  | -                 |

Only q's single writer writes ``<id>:in``, and it is final once written: a timeout can never both credit
the destination and refund the source.

The loop, step by step through the code:
1. p's batch (``batch.BatchService.apply_batch``) applies the step's rule; the rule's ``Book.follow_up``
   queues the next command, keyed by the account it is for.
2. The follow-up goes into ``ledger_outbox`` in the batch's own transaction (``sql.LedgerSQL.write_outbox``),
   to the commands topic: ``Outgoing.stream == "commands"``.
3. After the commit ``runner.LedgerProcessor._publish`` sends it to ``ogp.commands.v1``; its key puts it on
   the other account's partition, whose owner applies it like any command (back to 1, on q).
4. Nothing arrives (the follow-up was lost, dead-lettered, or q is down for long): each owner's periodic
   sweep (``runner.LedgerProcessor.sweep`` → ``batch.BatchService.sweep``) finds its transfers still PENDING
   after ``OGP_SAGA_TIMEOUT_SECONDS`` (``sql.LedgerSQL.due_for_sweep``) and calls :func:`time_out` on each,
   again after each further timeout, until q's answer settles it.
"""

from __future__ import annotations

from ledger_processor.domain import transfers
from ledger_processor.domain.book import Book, Transaction


def is_saga(tx: Transaction) -> bool:
    """A transfer the sweep found still PENDING: a saga waiting for its destination's answer."""
    return tx.transaction_type == transfers.TRANSFER


def time_out(book: Book, tx: Transaction) -> None:
    """The source waited longer than the saga timeout: ask the destination's partition to settle it
    (ExpireTransfer); its answer, Confirm or Reverse, finishes the saga. Safe to repeat."""
    transfers.request_expiry(book, tx)
