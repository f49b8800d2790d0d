"""The front door under real HTTP load: accepted commands/s and latency of pay, transfer, balance, history, webhook.

Usage: .venv/bin/python bench/http_load.py [--users 1000] [--duration 15] [--connections 64] [--workers 2]
       [--rate 1000] [--only pay,balance] [--profile SECONDS]

Starts PostgreSQL, Kafka (full JIT) and Redis (bench/_stack.py), migrates a fresh database, seeds --users
funded wallets and mints an access token for each, routes top-up orders for the webhook, then runs the
ledger processor, the command API and the query API as ``ogp up`` does (uvicorn, --workers each). Then:

* closed loop (``wrk``, --connections, scripts in bench/wrk/): the most each endpoint serves; a new
  Idempotency-Key per command, callers rotated over the seeded users. ``GET /health`` first, as the
  same-run baseline of what uvicorn on this machine serves with no work behind it.
* open loop (P3 latency): ``POST /api/payment/pay`` at a fixed --rate from an asyncio + aiohttp driver that
  sends on schedule whether or not earlier answers came, and times each from when it was due (wrk has no
  fixed rate and wrk2 is not in Debian; a closed loop hides queueing behind its own back-pressure).
* the webhook (P7) at concurrency 8, as its target is stated.

Each figure is printed beside its target, with the load average and the command API's CPU per accepted
command. Finally it waits for the ledger and counts the accepted commands that reached it (SUCCESS), so the
rates measure real work, not answers to requests that were lost.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp
import psycopg

from bench._stack import api_process, infrastructure, worker
from bench.ledger_throughput import FUNDS, seed
from bench.webhook_latency import SERVER_KEY, notification
from ledger_processor.sql import conninfo_from_url
from ogp.security.tokens import TokenService
from ogp.settings import Settings

WRK_DIR = Path(__file__).resolve().parent / "wrk"


@dataclass
class Figure:
    name: str
    requests: int
    ok: int
    seconds: float
    non2xx: int
    socket_errors: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    load: str
    cpu_ms_per_ok: float | None = None  # the API's own CPU per 2xx answer
    stack_cpu_ms_per_ok: float | None = None  # the API, PostgreSQL, Kafka, Redis and the processor together

    @property
    def ok_rate(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    def line(self, target: str) -> str:
        def ms(v: float | None) -> str:
            return f"{v:6.2f}" if v is not None else "     -"

        capacity = f"{CORES * 1000 / self.stack_cpu_ms_per_ok:7.0f}/s" if self.stack_cpu_ms_per_ok else "        -"
        return (
            f"  {self.name:<22} {self.ok_rate:8.0f}/s {self.p50_ms:7.1f} {self.p95_ms:7.1f} {self.p99_ms:7.1f}"
            f"   {self.non2xx + self.socket_errors:6d}  {ms(self.cpu_ms_per_ok)} {ms(self.stack_cpu_ms_per_ok)}"
            f" {capacity}   {self.load:<15} {target}"
        )


CORES = os.cpu_count() or 1
HEADER = (
    f"  {'endpoint':<22} {'2xx rate':>10} {'p50':>7} {'p95':>7} {'p99':>7}   {'errors':>6}  {'api ms':>6}"
    f" {'all ms':>6} {'capacity':>9}   {'loadavg 1m':<15} target"
)
LEGEND = (
    "  api ms / all ms: CPU per 2xx of the API / of the API, PostgreSQL, Kafka, Redis and the ledger processor\n"
    "  together; capacity: what this machine's cores would serve at that CPU if nothing else ran on them"
)


def loadavg() -> str:
    one, five, _ = Path("/proc/loadavg").read_text().split()[:3]
    return f"{one} ({five} 5m)"


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` and all its descendants (uvicorn's workers), from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    total, pending = 0.0, [pid]
    while pending:
        p = pending.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            for task in Path(f"/proc/{p}/task").iterdir():
                pending += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, IndexError, ValueError):
            continue
    return total


@dataclass(frozen=True)
class Load:
    duration: int  # seconds
    connections: int
    threads: int


@dataclass(frozen=True)
class Watched:
    """Processes whose CPU a run reads: the API's, and the whole stack's (the API's included)."""

    api: int
    stack: tuple[int, ...]


def wrk(name: str, base: str, script: str, load: Load, watched: Watched | None = None, **env: str) -> Figure:
    """One closed-loop wrk run; its JSON summary line (bench/wrk/lib.lua) made a Figure."""
    duration, connections, threads = load.duration, load.connections, load.threads
    argv = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration}s", "--timeout", "10s"]
    argv += ["-s", str(WRK_DIR / script), base]
    full_env = {
        **os.environ,
        "OGP_WRK_DIR": str(WRK_DIR),
        "OGP_WRK_RUN": uuid.uuid4().hex[:8],
        "OGP_WRK_THREADS": str(threads),
        **env,
    }
    api_before = tree_cpu_seconds(watched.api) if watched else 0.0
    stack_before = sum(tree_cpu_seconds(p) for p in watched.stack) if watched else 0.0
    out = subprocess.run(argv, env=full_env, capture_output=True, text=True, check=True).stdout
    api_cpu = tree_cpu_seconds(watched.api) - api_before if watched else None
    stack_cpu = sum(tree_cpu_seconds(p) for p in watched.stack) - stack_before if watched else None
    line = next(x for x in out.splitlines() if x.startswith("OGP_WRK "))
    s = json.loads(line.removeprefix("OGP_WRK "))
    return Figure(
        name,
        s["requests"],
        s["ok"],
        s["duration_us"] / 1e6,
        s["non2xx"],
        s["socket_errors"],
        s["p50_us"] / 1000,
        s["p95_us"] / 1000,
        s["p99_us"] / 1000,
        loadavg(),
        api_cpu * 1000 / s["ok"] if api_cpu is not None and s["ok"] else None,
        stack_cpu * 1000 / s["ok"] if stack_cpu is not None and s["ok"] else None,
    )


async def open_loop(
    base: str, users: list[tuple[str, str, str]], rate: int, duration: int, max_in_flight: int = 1000
) -> Figure:
    """``POST /api/payment/pay`` at ``rate``/s on schedule; each latency counted from when it was due.

    A request due while ``max_in_flight`` are unanswered is not sent and counts as an error: a server that
    cannot keep up fails the run without a queue of timed-out requests burying the runs after it."""
    run = uuid.uuid4().hex[:8]
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    errors = 0
    in_flight = 0
    total = rate * duration
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    async with aiohttp.ClientSession(base, connector=connector, timeout=aiohttp.ClientTimeout(total=10)) as http:

        async def one(i: int, due: float) -> None:
            nonlocal errors, in_flight
            in_flight += 1
            token = users[i % len(users)][0]
            try:
                async with http.post(
                    "/api/payment/pay",
                    data=f'{{"amount": "1000.00", "merchant_reference": "open-{i}"}}',
                    headers={
                        "Authorization": f"Bearer {token}",
                        "Content-Type": "application/json",
                        "Idempotency-Key": f"{run}-{i}",
                    },
                ) as reply:
                    await reply.read()
                    statuses[reply.status] = statuses.get(reply.status, 0) + 1
            except (aiohttp.ClientError, TimeoutError):
                errors += 1
                return
            finally:
                in_flight -= 1
            latencies.append(time.perf_counter() - due)

        loop = asyncio.get_running_loop()
        tasks = []
        started = time.perf_counter()
        for i in range(total):
            due = started + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if in_flight >= max_in_flight:
                errors += 1
                continue
            tasks.append(loop.create_task(one(i, due)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - started
    latencies.sort()
    ok = sum(n for s, n in statuses.items() if 200 <= s < 300)

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000 if latencies else float("nan")

    return Figure(
        f"pay @ {rate}/s open loop",
        total,
        ok,
        elapsed,
        total - ok - errors,
        errors,
        pct(0.5),
        pct(0.95),
        pct(0.99),
        loadavg(),
    )


def seed_users(settings: Settings, n: int, data: Path) -> list[tuple[str, str, str]]:
    """``n`` funded wallets; one line per user in ``data``: access token, account id, a peer's account id."""
    assert settings.database_url is not None
    accounts = seed(settings.database_url, n, FUNDS)
    tokens = TokenService.from_settings(settings)
    users = [
        (tokens.issue_access(user_id, False).token, account_id, accounts[(i + 1) % n][1])
        for i, (user_id, account_id) in enumerate(accounts)
    ]
    data.write_text("".join("\t".join(u) + "\n" for u in users))
    return users


def route_orders(settings: Settings, users: list[tuple[str, str, str]], n: int, data: Path) -> None:
    """``n`` routed top-up orders into the seeded wallets, and a signed settlement of each in ``data``."""
    orders = [str(uuid.uuid4()) for _ in range(n)]
    assert settings.database_url is not None
    with psycopg.connect(conninfo_from_url(settings.database_url)) as conn:
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO midtrans_orders (order_id, payment_id, kind, account_id, amount) "
                "VALUES (%s, %s, 'TOPUP', %s, 150000)",
                [(o, o, users[i % len(users)][1]) for i, o in enumerate(orders)],
            )
    data.write_text("".join(notification(o).decode() + "\n" for o in orders))


def accepted_and_posted(settings: Settings) -> tuple[int, int]:
    """Commands the command API accepted (their Idempotency-Key answered 202), and how many the ledger posted."""
    assert settings.database_url is not None
    with psycopg.connect(conninfo_from_url(settings.database_url)) as conn:
        row = conn.execute(
            "SELECT count(*), count(t.transaction_id) FROM idempotency_keys k LEFT JOIN ledger_transactions t "
            "ON t.transaction_id = k.transaction_id AND t.status = 'SUCCESS' "
            "WHERE k.state = 'DONE' AND k.response_status = 202"
        ).fetchone()
    assert row is not None, "an aggregate returns one row"
    return int(row[0]), int(row[1])


def settle(settings: Settings, timeout: float = 600) -> tuple[int, int]:
    """Wait until the ledger has posted every accepted command, or stops moving for 30 s; (accepted, posted)."""
    deadline = time.monotonic() + timeout
    last, still = -1, 0
    while True:
        accepted, posted = accepted_and_posted(settings)
        if posted >= accepted or time.monotonic() > deadline or still >= 30:
            return accepted, posted
        still = still + 1 if posted == last else 0
        last = posted
        time.sleep(1)


@contextlib.contextmanager
def profiled(pid: int, seconds: int, out: str) -> Iterator[None]:
    """py-spy (raw, collapsed stacks, subprocesses too) on ``pid`` for ``seconds`` of what runs inside."""
    if not seconds:
        yield
        return
    argv = ["py-spy", "record", "-d", str(seconds), "-r", "200", "-s", "-f", "raw", "-o", out, "-p", str(pid)]
    spy = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield
    finally:
        spy.wait(120)
    print(f"py-spy profile: {out}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--duration", type=int, default=15, help="seconds per closed-loop run")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn workers per API (default: the cores)")
    parser.add_argument("--rate", type=int, default=1000, help="open-loop requests/s for P3's latency")
    parser.add_argument("--open-duration", type=int, default=15)
    parser.add_argument("--only", default="health,pay,transfer,balance,history,webhook,open")
    parser.add_argument("--profile", type=int, default=0, help="py-spy the API for N s of pay and of balance")
    parser.add_argument("--profile-out", default="/tmp/ogp-http-load", help="py-spy's raw output: PREFIX-pay.txt...")
    parser.add_argument("--no-processor", action="store_true", help="accept only (the ledger is not run)")
    args = parser.parse_args()
    only = set(args.only.split(","))
    tmp = Path(tempfile.mkdtemp(prefix="ogp-bench-http-"))
    try:
        return run(args, only, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(args: argparse.Namespace, only: set[str], tmp: Path) -> int:
    users_file, hooks_file = tmp / "users.tsv", tmp / "webhooks.tsv"
    figures: list[tuple[Figure, str]] = []
    with infrastructure("http", midtrans_confirm_status=False) as infra:
        settings = infra.settings
        env = {"MIDTRANS_SERVER_KEY": SERVER_KEY, "OGP_MIDTRANS_CONFIRM_STATUS": "false"}
        users = seed_users(settings, args.users, users_file)
        route_orders(settings, users, 60_000 if "webhook" in only else 0, hooks_file)
        print(f"seeded {len(users)} wallets; load average {loadavg()}; {CORES} cores", flush=True)
        with contextlib.ExitStack() as stack:
            pids = list(infra.pids.values())
            if not args.no_processor:
                processor = stack.enter_context(
                    worker("ledger_processor", settings, tmp / "run", OGP_EMONEY_LIMITS_ENABLED="false")
                )
                pids.append(processor.process.pid() or 0)
            commands = stack.enter_context(
                api_process("command_api.app:create_app", settings, workers=args.workers, log=tmp / "cmd.log", **env)
            )
            queries = stack.enter_context(
                api_process("query_api.app:create_app", settings, workers=args.workers, log=tmp / "query.log")
            )
            data = str(users_file)
            w = Load(args.duration, args.connections, args.threads)
            on_commands = Watched(commands.pid, (*pids, commands.pid))
            on_queries = Watched(queries.pid, (*pids, queries.pid))
            # Warm-up: connection pools filled, the producer's metadata, the first request of every route.
            warm = Load(3, args.connections, args.threads)
            wrk("warm-up", commands.url, "pay.lua", warm, OGP_WRK_DATA=data)
            wrk("warm-up", queries.url, "read.lua", warm, OGP_WRK_DATA=data, OGP_WRK_PATH="/api/payment/balance")
            if "health" in only:
                f = wrk("GET /health (command)", commands.url, "health.lua", w, on_commands)
                figures.append((f, "baseline: uvicorn with no work"))
            if "pay" in only:
                with profiled(commands.pid, args.profile, f"{args.profile_out}-pay.txt"):
                    f = wrk("POST pay", commands.url, "pay.lua", w, on_commands, OGP_WRK_DATA=data)
                figures.append((f, "P3 >= 2,000/s accepted"))
            if "transfer" in only:
                f = wrk("POST transfer", commands.url, "transfer.lua", w, on_commands, OGP_WRK_DATA=data)
                figures.append((f, "(as pay)"))
            if "balance" in only:
                path = "/api/payment/balance"
                with profiled(queries.pid, args.profile, f"{args.profile_out}-balance.txt"):
                    f = wrk("GET balance", queries.url, "read.lua", w, on_queries, OGP_WRK_DATA=data, OGP_WRK_PATH=path)
                figures.append((f, "P6 >= 3,000/s"))
            if "history" in only:
                path = "/api/payment/transactions?limit=20"
                f = wrk(
                    "GET history (20)", queries.url, "read.lua", w, on_queries, OGP_WRK_DATA=data, OGP_WRK_PATH=path
                )
                figures.append((f, "(P6 names no figure)"))
            if "webhook" in only:
                c8 = Load(args.duration, 8, 2)
                f = wrk(
                    "POST webhook (c=8)", commands.url, "webhook.lua", c8, on_commands, OGP_WRK_DATA=str(hooks_file)
                )
                figures.append((f, "P7 p99 < 50 ms at concurrency 8"))
            if "open" in only:  # last: a server that cannot keep up leaves a queue behind
                f = asyncio.run(open_loop(commands.url, users, args.rate, args.open_duration))
                figures.append((f, f"P3 p99 < 20 ms at {args.rate:,}/s, no errors"))
            print(
                f"\nfront door: {args.workers} uvicorn worker(s) per API; closed loop wrk -t{args.threads}"
                f" -c{args.connections}, {args.duration} s a run; latencies in ms"
            )
            print(HEADER)
            for f, target in figures:
                print(f.line(target))
            print(LEGEND)
            if not args.no_processor:
                accepted, posted = settle(settings)
                verdict = "every one" if posted == accepted else f"{accepted - posted} NOT POSTED"
                print(f"\nledger: of {accepted} commands the API accepted, {posted} are posted SUCCESS: {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
