"""The export's files: a manifest fixing the range, and part files named by the offsets they cover.

``DIR/_manifest.json`` is written once, by the first run: the topic, what was asked (times or offsets), and the
range that resolved to (partition → [first, end) offsets). A rerun with the same request reads it back and
finishes that range, whatever the topic holds by then; another request into the same folder is refused.

A part file holds one partition's records from ``first`` to ``upto`` (exclusive), and its name says so:
``TOPIC-pPPPP-FFFFFFFFFFFFFFFFFFFF-UUUUUUUUUUUUUUUUUUUU.parquet``. It is written under a temporary name, flushed
to disk and renamed: a file with a part's name is complete, and a run killed mid-write leaves only a hidden
``.tmp`` file (readers of the folder skip it), which the next run deletes. Each partition resumes at the highest
``upto`` of its parts, so a rerun writes no record twice and skips none.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ogp.errors import OperatorError
from projections.replay import Ranges

MANIFEST = "_manifest.json"  # "_" and "." prefixes: files pyarrow and DuckDB readers of the folder skip
_PART = re.compile(r"^(?P<topic>.+)-p(?P<partition>\d{4})-(?P<first>\d{20})-(?P<upto>\d{20})\.parquet$")


class ExportError(OperatorError):
    """The output folder holds another export, or its files do not add up."""


@dataclass(frozen=True)
class Manifest:
    """What an export folder is for: the topic, the request as given, and the range it resolved to."""

    topic: str
    request: dict[str, Any]
    ranges: Ranges
    schema_version: int

    def to_json(self) -> str:
        ranges = {str(p): list(r) for p, r in sorted(self.ranges.items())}
        return json.dumps(
            {"topic": self.topic, "request": self.request, "ranges": ranges, "schema_version": self.schema_version},
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        data = json.loads(text)
        ranges = {int(p): (int(r[0]), int(r[1])) for p, r in data["ranges"].items()}
        return cls(data["topic"], data["request"], ranges, int(data["schema_version"]))


@dataclass(frozen=True)
class Part:
    """One complete part file: ``partition``'s offsets [first, upto)."""

    path: Path
    partition: int
    first: int
    upto: int


def part_name(topic: str, partition: int, first: int, upto: int) -> str:
    """The file name of a part (zero-padded, so names sort in offset order)."""
    return f"{topic}-p{partition:04d}-{first:020d}-{upto:020d}.parquet"


def _write_atomically(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    # The rename itself must survive a crash of the machine, not only of this process.
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_manifest(out: Path, manifest: Manifest) -> None:
    """Create ``out`` and its manifest."""
    out.mkdir(parents=True, exist_ok=True)
    _write_atomically(out / MANIFEST, lambda tmp: tmp.write_text(manifest.to_json()))


def read_manifest(out: Path) -> Manifest | None:
    """The folder's manifest, or None if no export was started there."""
    path = out / MANIFEST
    return Manifest.from_json(path.read_text()) if path.exists() else None


def write_part(out: Path, topic: str, partition: int, first: int, upto: int, table: pa.Table) -> Part:
    """Write one part file atomically (a temporary name, fsync, rename)."""
    path = out / part_name(topic, partition, first, upto)
    _write_atomically(path, lambda tmp: pq.write_table(table, tmp, compression="zstd"))
    return Part(path, partition, first, upto)


def clean_partial(out: Path) -> int:
    """Delete what a killed run left half-written; returns how many files."""
    stale = list(out.glob(".*.tmp"))
    for path in stale:
        path.unlink()
    return len(stale)


def complete_parts(out: Path, topic: str) -> list[Part]:
    """The complete part files of ``topic`` in ``out``, by partition and offset."""
    parts = []
    for path in out.glob("*.parquet"):
        match = _PART.match(path.name)
        if match and match["topic"] == topic:
            parts.append(Part(path, int(match["partition"]), int(match["first"]), int(match["upto"])))
    return sorted(parts, key=lambda p: (p.partition, p.first))


def resume_points(parts: list[Part], ranges: Ranges) -> dict[int, int]:
    """partition → the offset the export goes on from: its range's first, or where its parts end.

    The parts of a partition must tile its range from the start without gaps or overlaps (ExportError if not:
    a file was removed or copied in by hand)."""
    points = {p: first for p, (first, _) in ranges.items()}
    for part in parts:
        if part.partition not in ranges or part.first != points[part.partition]:
            raise ExportError(
                f"{part.path.name} does not follow the partition's other parts (expected it to start at "
                f"{points.get(part.partition)}); the folder was changed by hand: export into a new one"
            )
        points[part.partition] = part.upto
    return points


def count_rows(parts: list[Part]) -> int:
    """The records the part files hold (from their Parquet footers)."""
    return sum(pq.read_metadata(part.path).num_rows for part in parts)
