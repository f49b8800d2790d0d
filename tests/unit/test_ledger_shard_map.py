"""The partition → database map (OGP_LEDGER_DATABASES): validation, routing, the distinct databases."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from ogp.db.shards import LedgerShards, label, ranges
from ogp.settings import Settings

MAIN = "postgresql+psycopg://ogp:secret@db0:5432/main"
A = "postgresql+psycopg://ogp:secret@db1:5432/ledger"
B = "postgresql+psycopg://ogp:secret@db2:6432/ledger"


def settings(*entries: tuple[str, str], partitions: int = 12) -> Settings:
    return Settings(
        database_url=MAIN,
        commands_partitions=partitions,
        ledger_databases=[{"partitions": p, "url": u} for p, u in entries],
    )


def test_without_a_map_every_partition_is_in_the_main_database():
    shards = LedgerShards.from_settings(settings())
    assert not shards.sharded
    assert {shards.url_of(p) for p in range(12)} == {MAIN}
    [only] = shards.shards()
    assert (only.url, only.partitions, only.main) == (MAIN, tuple(range(12)), True)


def test_listed_partitions_go_to_their_database_and_the_rest_stay_in_the_main_one():
    shards = LedgerShards.from_settings(settings(("6-9", A), ("10", B), ("11", A)))
    assert shards.sharded
    assert [shards.url_of(p) for p in (0, 5, 6, 9, 10, 11)] == [MAIN, MAIN, A, A, B, A]
    assert [(s.url, s.partitions, s.main) for s in shards.shards()] == [
        (MAIN, (0, 1, 2, 3, 4, 5), True),
        (A, (6, 7, 8, 9, 11), False),
        (B, (10,), False),
    ]
    # A partition beyond the configured count (a topic grown since) stays in the main database.
    assert shards.url_of(12) == MAIN


def test_the_main_database_is_listed_even_when_the_map_gives_every_partition_away():
    shards = LedgerShards.from_settings(settings(("0-5", A), ("6-11", B)))
    assert [(s.url, s.partitions) for s in shards.shards()] == [
        (MAIN, ()),
        (A, tuple(range(6))),
        (B, tuple(range(6, 12))),
    ]


def test_the_main_database_named_in_the_map_is_not_sharded():
    assert not LedgerShards.from_settings(settings(("0-11", MAIN))).sharded


def test_the_map_is_read_from_the_environment_as_json(monkeypatch):
    monkeypatch.setenv("OGP_LEDGER_DATABASES", json.dumps([{"partitions": "6-11", "url": B}]))
    monkeypatch.setenv("OGP_DATABASE_URL", MAIN)
    shards = LedgerShards.from_settings(Settings())
    assert shards.url_of(6) == B and shards.url_of(5) == MAIN


@pytest.mark.parametrize(
    ("entries", "why"),
    [
        ((("0-6", A), ("6-11", B)), "partition 6 is in two ranges"),
        ((("6-12", A),), "reach past the commands topic's 12 partitions"),
        ((("5-3", A),), "ends before it starts"),
        ((("a-b", A),), "must be 'first-last' or one number"),
        ((("-1", A),), "must be 'first-last' or one number"),
    ],
)
def test_overlapping_or_impossible_ranges_are_refused(entries, why):
    with pytest.raises(ValidationError, match=why):
        settings(*entries)


def test_labels_and_ranges_are_for_people_and_never_show_the_password():
    assert label(B) == "db2:6432/ledger"
    assert "secret" not in label(A)
    assert ranges([0, 1, 2, 5, 7, 8]) == "0-2, 5, 7-8"
    assert ranges([]) == "none"
