"""PromQL as the checks of dashboards (and rules) read it: which metric names an expression reads, which names the
code exposes, and promtool's verdict on a set of expressions."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterable
from pathlib import Path

import yaml
from prometheus_client import REGISTRY

import ogp.metrics  # noqa: F401 - registers every family the code exposes on the default registry

# The sample names a family of each type exposes (prometheus-client names a counter without its _total).
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
}
# Series Prometheus itself adds to every target.
SCRAPE_SERIES = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped", "scrape_series_added"})

_KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left", "group_right"}
    | {"inf", "nan", "atan2"}
)
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", re.IGNORECASE)
_IDENTIFIER = re.compile(r"(?<![\w.:])[a-zA-Z_:][a-zA-Z0-9_:]*")


def exposed_names() -> set[str]:
    """Every sample name the processes expose: ogp/metrics.py's families (and the default collectors')."""
    names = set(SCRAPE_SERIES)
    for family in REGISTRY.collect():
        names |= {family.name + suffix for suffix in _SUFFIXES.get(family.type, ("",))}
    return names


def metric_names(expr: str) -> set[str]:
    """The metric names ``expr`` reads: identifiers outside strings, label matchers, ranges and grouping
    clauses that are neither keywords nor called as functions."""
    bare = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)
    bare = re.sub(r"\{[^}]*\}", " ", bare)
    bare = re.sub(r"\[[^\]]*\]", " ", bare)
    bare = _GROUPING.sub(" ", bare)
    names = set()
    for match in _IDENTIFIER.finditer(bare):
        if match.group().lower() in _KEYWORDS or bare[match.end() :].lstrip().startswith("("):
            continue
        names.add(match.group())
    return names


def unexposed(exprs: Iterable[str]) -> set[str]:
    """The metric names some expression reads that no process exposes (a typo, or a family since renamed)."""
    exposed = exposed_names()
    return {name for expr in exprs for name in metric_names(expr) if name not in exposed}


def promtool_check(promtool: str, exprs: Iterable[str], folder: Path) -> subprocess.CompletedProcess:
    """promtool's syntax check of ``exprs``, each as a recording rule in a file written to ``folder``."""
    rules = [{"record": f"dashboard:expr_{i}", "expr": expr} for i, expr in enumerate(exprs)]
    path = folder / "expressions.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "expressions", "rules": rules}]}))
    return subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
