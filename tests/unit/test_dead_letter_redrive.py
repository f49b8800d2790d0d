"""Which dead letters a person may redrive: only those no client was given a final answer for."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from command_api.dead_letters import DeadLetter, Redrive

NOW = datetime(2026, 11, 30, tzinfo=UTC)


def letter(command_type: str | None, transaction_id: str | None = "t-1", **fields) -> DeadLetter:
    values = {
        "partition": 0,
        "offset": 7,
        "transaction_id": transaction_id,
        "account_id": "a-1",
        "command_type": command_type,
        "reason": "processing_error",
        "detail": "ZeroDivisionError",
        "outcome_recorded": False,
        "at": NOW,
        "payload": b"{}",
        "redrive": None,
    } | fields
    return DeadLetter(**values)


@pytest.mark.parametrize(
    "command_type", ["RecordMidtransStatus", "CreditTransfer", "ConfirmTransfer", "ReverseTransfer", "ExpireTransfer"]
)
def test_a_midtrans_status_or_a_saga_step_without_an_outcome_can_be_redriven(command_type):
    assert letter(command_type).why_not_redrivable is None


def test_a_record_nobody_could_decode_can_be_redriven():
    assert letter(None, transaction_id=None).why_not_redrivable is None


@pytest.mark.parametrize(
    "command_type", ["RequestPayment", "RequestTransfer", "RequestRefund", "RequestTopup", "RequestOrderPayment"]
)
def test_a_clients_request_answered_failed_from_its_dead_letter_is_final(command_type):
    assert "answered FAILED" in (letter(command_type).why_not_redrivable or "")


def test_a_recorded_outcome_a_stale_status_change_a_lost_record_or_a_second_redrive_are_refused():
    assert "final state" in (letter("RequestPayment", outcome_recorded=True).why_not_redrivable or "")
    assert "stale" in (letter("ChangeAccountStatus", transaction_id=None).why_not_redrivable or "")
    assert "not kept" in (letter("RecordMidtransStatus", payload=None).why_not_redrivable or "")
    done = Redrive("cli:ops", "", 0, 9, NOW)
    assert letter("RecordMidtransStatus", redrive=done).why_not_redrivable == "already redriven"
