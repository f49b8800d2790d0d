"""The floor of an authenticated balance read on this machine: the real query API beside apps with less around it.

Usage: .venv/bin/python bench/balance_floor.py [--users 1000] [--duration 10] [--connections 64] [--workers 2]
       [--variants real,asgi-const,...] [--reverse]

Starts PostgreSQL, Kafka and Redis (bench/_stack.py), migrates a fresh database, seeds --users funded wallets and
mints an access token for each, as bench/http_load.py does. No ledger processor runs: a balance read does not
touch it (Kafka runs, idle, because the query API's start-up connects its producer; its CPU is shown apart and
left out of "all ms"). Then it serves each variant in turn under uvicorn with --workers, as http_load serves the
query API (bench/_stack.py), and drives ``GET /api/payment/balance`` with the same wrk script and settings as
http_load's balance run (3 s warm-up, then --duration s measured):

* real: the query API (``query_api.app:create_app``), the reference;
* asgi-const: a bare ASGI app answering a constant JSON: the server's floor;
* asgi-auth: bare ASGI with the bearer check (``TokenService.verify`` + redis-py ``EXISTS`` on the deny-list);
* asgi-psycopg: that, and the real statement through the project's ``fetch_one`` on the query API's engine;
* asgi-asyncpg: the same statement through an asyncpg pool (skipped with a note when asyncpg is missing);
* fastapi-psycopg: asgi-psycopg's work as one plain FastAPI route (no project edge);
* asgi-lean, fastapi-lean: asyncpg, and a minimal pipelined Redis client in place of redis-py for the deny-list,
  bare and in one FastAPI route (skipped without asyncpg).

(bench/_floor_apps.py holds the apps.) Each line: 2xx/s, latency, CPU per 2xx of the API, of the API +
PostgreSQL + Redis ("all"), of wrk itself, and of the whole machine (every core's busy time over the run, whoever
spent it), and the capacity 2 cores would serve at "all" and at the machine's figure, beside P6's 3,000/s. Writes
.ogp/bench/balance_floor.json for bench/report.py.
"""

from __future__ import annotations

import argparse
import importlib.util
import resource
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._floor_apps import APPS, BALANCE
from bench._stack import api_process, infrastructure
from bench.cpu import machine_busy_seconds
from bench.http_load import CORES, Figure, Load, Watched, loadavg, seed_users, wrk
from bench.report import Measurement, save

P6 = 3000  # balance reads/s
VARIANTS = ("real", *APPS)
REAL = "query_api.app:create_app"
NEED_ASYNCPG = {"asgi-asyncpg", "asgi-lean", "fastapi-lean"}
LEFT_OUT = ("kafka",)  # idle for a balance read: shown, not in "all ms"


@dataclass(frozen=True)
class Row:
    variant: str
    figure: Figure
    wrk_ms: float  # wrk's own CPU per 2xx
    machine_ms: float  # the whole machine's busy CPU per 2xx

    @property
    def all_ms(self) -> float:
        return sum(v for k, v in self.figure.parts_ms_per_ok.items() if k not in LEFT_OUT)

    def line(self) -> str:
        f = self.figure
        capacity = CORES * 1000 / self.all_ms if self.all_ms else 0
        machine = CORES * 1000 / self.machine_ms if self.machine_ms else 0
        return (
            f"  {self.variant:<16} {f.ok_rate:7.0f}/s {f.p50_ms:6.1f} {f.p99_ms:6.1f} {f.non2xx + f.socket_errors:6d}"
            f"  {f.cpu_ms_per_ok or 0:6.3f} {self.all_ms:6.3f} {self.wrk_ms:6.3f} {self.machine_ms:6.3f}"
            f"  {capacity:7.0f}/s {machine:7.0f}/s   {f.load}\n"
            "      CPU per 2xx, ms: " + ", ".join(f"{n} {v:.3f}" for n, v in f.parts_ms_per_ok.items())
        )


HEADER = (
    f"  {'variant':<16} {'2xx rate':>9} {'p50':>6} {'p99':>6} {'errors':>6}  {'api ms':>6} {'all ms':>6}"
    f" {'wrk ms':>6} {'mach ms':>6}  {'cap(all)':>9} {'cap(mach)':>9}   loadavg 1m"
)
LEGEND = (
    "  CPU per 2xx: api = the server and its workers; all = api + PostgreSQL + Redis (Kafka idle, left out);\n"
    "  wrk = the load generator; mach = every core's busy time over the run / 2xx (all, wrk, and anything else\n"
    f"  running). cap = {CORES} cores / that CPU per read. P6: >= {P6:,}/s, i.e. <= {CORES * 1000 / P6:.2f} ms of"
    " the machine per read, wrk's included."
)


def measured(variant: str, url: str, load: Load, watched: Watched, data: str) -> Row:
    """One measured wrk run of the balance read (http_load's script and figures), with wrk's and the machine's
    CPU over it."""
    env = {"OGP_WRK_DATA": data, "OGP_WRK_PATH": BALANCE}
    wrk("warm-up", url, "read.lua", Load(3, load.connections, load.threads), None, **env)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)  # wrk is the only child reaped meanwhile
    busy = machine_busy_seconds()
    f = wrk(variant, url, "read.lua", load, watched, **env)
    busy = machine_busy_seconds() - busy
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    wrk_cpu = after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime
    ok = max(f.ok, 1)
    return Row(variant, f, wrk_cpu * 1000 / ok, busy * 1000 / ok)


def measurements(rows: list[Row]) -> list[Measurement]:
    """Each variant's rate as context for P6 (http_load's balance run holds P6's own figure)."""
    out = []
    for r in rows:
        f = r.figure
        what = f"balance floor, {r.variant}: 2xx/s (wrk closed loop), p99 {f.p99_ms:,.1f} ms"
        limit = (
            f"API {f.cpu_ms_per_ok or 0:.3f} ms, all {r.all_ms:.3f} ms, machine {r.machine_ms:.3f} ms CPU per read; "
            f"capacity {CORES * 1000 / r.all_ms if r.all_ms else 0:,.0f}/s at all"
        )
        out.append(Measurement("P6", what, f.ok_rate, "/s", None, None, limit, f.load, f"floor:{r.variant}"))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--duration", type=int, default=10, help="seconds per measured run")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn workers per app")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--reverse", action="store_true", help="serve the variants in the reverse order")
    args = parser.parse_args()
    variants = [v for v in args.variants.split(",") if v]
    if unknown := set(variants) - set(VARIANTS):
        parser.error(f"unknown variants {sorted(unknown)}; known: {', '.join(VARIANTS)}")
    if importlib.util.find_spec("asyncpg") is None:
        for variant in NEED_ASYNCPG & set(variants):
            print(f"{variant} skipped: asyncpg is not installed (pip install asyncpg; measured, not a dependency)")
            variants.remove(variant)
    if args.reverse:
        variants.reverse()
    tmp = Path(tempfile.mkdtemp(prefix="ogp-bench-floor-"))
    try:
        return run(args, variants, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(args: argparse.Namespace, variants: list[str], tmp: Path) -> int:
    users_file = tmp / "users.tsv"
    rows: list[Row] = []
    with infrastructure("floor") as infra:
        settings = infra.settings
        seed_users(settings, args.users, users_file)
        print(f"seeded {args.users} wallets; load average {loadavg()}; {CORES} cores; no ledger processor", flush=True)
        load = Load(args.duration, args.connections, args.threads)
        for variant in variants:
            app = REAL if variant == "real" else APPS[variant]
            # The real query API as http_load runs it (INFO logs); the floor apps log nothing of their own.
            served = api_process(app, settings, workers=args.workers, log=tmp / f"{variant}.log", OGP_LOG_LEVEL="INFO")
            with served as api:
                watched = Watched(api.pid, (*infra.pids.values(), api.pid), (*infra.pids, "API"))
                rows.append(measured(variant, api.url, load, watched, str(users_file)))
            print(f"  {variant}: {rows[-1].figure.ok_rate:,.0f}/s; load average {loadavg()}", flush=True)
    print(
        f"\nbalance floor: {args.workers} uvicorn workers per app; wrk -t{args.threads} -c{args.connections},"
        f" {args.duration} s a run (after 3 s of warm-up); latencies in ms; CPU in ms per 2xx"
    )
    print(HEADER)
    for r in rows:
        print(r.line())
    print(LEGEND)
    save("balance_floor", measurements(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
