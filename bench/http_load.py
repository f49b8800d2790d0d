"""The front door under real HTTP load: accepted commands/s and latency of pay, transfer, balance, history, webhook.

Usage: .venv/bin/python bench/http_load.py [--users 1000] [--duration 15] [--connections 64] [--workers 2]
       [--rate 1000] [--only pay,balance] [--profile-pay SECONDS]

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
import subprocess
import sys
import tempfile
import time
import uuid
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
    cpu_ms_per_ok: float | None = None

    @property
    def ok_rate(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    def line(self, target: str) -> str:
        cpu = f"{self.cpu_ms_per_ok:6.2f}" if self.cpu_ms_per_ok is not None else "     -"
        return (
            f"  {self.name:<22} {self.ok_rate:8.0f}/s {self.p50_ms:7.1f} {self.p95_ms:7.1f} {self.p99_ms:7.1f}"
            f"   {self.non2xx + self.socket_errors:6d}  {cpu}   {self.load:<15} {target}"
        )


HEADER = (
    f"  {'endpoint':<22} {'2xx rate':>10} {'p50':>7} {'p95':>7} {'p99':>7}   {'errors':>6}  {'cpu ms':>6}"
    f"   {'loadavg 1m':<15} target"
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


def wrk(
    name: str,
    base: str,
    script: str,
    duration: int,
    connections: int,
    threads: int,
    cpu_pid: int | None = None,
    **env: str,
) -> Figure:
    """One closed-loop wrk run; its JSON summary line (bench/wrk/lib.lua) made a Figure."""
    argv = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration}s", "--timeout", "10s"]
    argv += ["-s", str(WRK_DIR / script), base]
    full_env = {
        **os.environ,
        "OGP_WRK_DIR": str(WRK_DIR),
        "OGP_WRK_RUN": uuid.uuid4().hex[:8],
        "OGP_WRK_THREADS": str(threads),
        **env,
    }
    cpu_before = tree_cpu_seconds(cpu_pid) if cpu_pid else 0.0
    out = subprocess.run(argv, env=full_env, capture_output=True, text=True, check=True).stdout
    cpu = tree_cpu_seconds(cpu_pid) - cpu_before if cpu_pid else None
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
        cpu * 1000 / s["ok"] if cpu is not None and s["ok"] else None,
    )


async def open_loop(base: str, users: list[tuple[str, str, str]], rate: int, duration: int) -> Figure:
    """``POST /api/payment/pay`` at ``rate``/s on schedule; each latency counted from when it was due."""
    run = uuid.uuid4().hex[:8]
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    errors = 0
    total = rate * duration
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    async with aiohttp.ClientSession(base, connector=connector, timeout=aiohttp.ClientTimeout(total=10)) as http:

        async def one(i: int, due: float) -> None:
            nonlocal errors
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
            latencies.append(time.perf_counter() - due)

        loop = asyncio.get_running_loop()
        tasks = []
        started = time.perf_counter()
        for i in range(total):
            due = started + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
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


def ledger_count(settings: Settings) -> int:
    """Wallet commands the ledger has posted (payments and transfers), SUCCESS."""
    assert settings.database_url is not None
    with psycopg.connect(conninfo_from_url(settings.database_url)) as conn:
        row = conn.execute(
            "SELECT count(*) FROM ledger_transactions WHERE status = 'SUCCESS' "
            "AND transaction_type IN ('PAYMENT', 'TRANSFER')"
        ).fetchone()
    assert row is not None
    return int(row[0])


def settle(settings: Settings, expected: int, timeout: float = 600) -> int:
    """Wait until the ledger has posted ``expected`` commands or stops moving; what it posted."""
    deadline = time.monotonic() + timeout
    last, still = -1, 0
    while time.monotonic() < deadline:
        now = ledger_count(settings)
        if now >= expected:
            return now
        still = still + 1 if now == last else 0
        if still >= 30:  # 30 s without progress: it is not coming
            return now
        last = now
        time.sleep(1)
    return ledger_count(settings)


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
    parser.add_argument("--profile-pay", type=int, default=0, help="py-spy the command API for N s during pay")
    parser.add_argument("--profile-out", default="/tmp/ogp-http-load-pay.txt", help="py-spy's raw (collapsed) output")
    parser.add_argument("--no-processor", action="store_true", help="accept only (the ledger is not run)")
    args = parser.parse_args()
    only = set(args.only.split(","))
    tmp = Path(tempfile.mkdtemp(prefix="ogp-bench-http-"))
    users_file, hooks_file = tmp / "users.tsv", tmp / "webhooks.tsv"
    figures: list[tuple[Figure, str]] = []
    with infrastructure("http", midtrans_confirm_status=False) as settings:
        env = {"MIDTRANS_SERVER_KEY": SERVER_KEY, "OGP_MIDTRANS_CONFIRM_STATUS": "false"}
        users = seed_users(settings, args.users, users_file)
        route_orders(settings, users, 60_000 if "webhook" in only else 0, hooks_file)
        print(f"seeded {len(users)} wallets; load average {loadavg()}; {os.cpu_count()} cores", flush=True)
        with contextlib.ExitStack() as stack:
            if not args.no_processor:
                stack.enter_context(
                    worker("ledger_processor", settings, tmp / "run", OGP_EMONEY_LIMITS_ENABLED="false")
                )
            commands = stack.enter_context(
                api_process("command_api.app:create_app", settings, workers=args.workers, log=tmp / "cmd.log", **env)
            )
            queries = stack.enter_context(
                api_process("query_api.app:create_app", settings, workers=args.workers, log=tmp / "query.log")
            )
            cmd_pid = int(
                subprocess.run(
                    ["sh", "-c", f"ss -ltnpH 'sport = :{commands.rsplit(':', 1)[1]}'"], capture_output=True, text=True
                )
                .stdout.split("pid=")[1]
                .split(",")[0]
            )
            # uvicorn --workers: the listener is the supervisor; its children do the work (tree_cpu sums them).
            w = dict(duration=args.duration, connections=args.connections, threads=args.threads)
            # Warm-up: connection pools, the producer's metadata, the first request of every route.
            warm = wrk("warm-up", commands, "pay.lua", 3, 8, 2, OGP_WRK_DATA=str(users_file))
            wrk(
                "warm-up",
                queries,
                "read.lua",
                2,
                8,
                2,
                OGP_WRK_DATA=str(users_file),
                OGP_WRK_PATH="/api/payment/balance",
            )
            if "health" in only:
                figures.append((wrk("GET /health (command)", commands, "health.lua", cpu_pid=cmd_pid, **w), "baseline"))
            if "pay" in only:
                profiler = None
                if args.profile_pay:
                    profiler = subprocess.Popen(
                        [
                            "py-spy",
                            "record",
                            "-d",
                            str(args.profile_pay),
                            "-r",
                            "200",
                            "-s",
                            "-f",
                            "raw",
                            "-o",
                            args.profile_out,
                            "-p",
                            str(cmd_pid),
                        ],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                f = wrk("POST pay", commands, "pay.lua", cpu_pid=cmd_pid, OGP_WRK_DATA=str(users_file), **w)
                if profiler:
                    profiler.wait(60)
                figures.append((f, "P3 >= 2,000/s accepted"))
            if "transfer" in only:
                f = wrk("POST transfer", commands, "transfer.lua", cpu_pid=cmd_pid, OGP_WRK_DATA=str(users_file), **w)
                figures.append((f, "(as pay)"))
            if "open" in only:
                f = asyncio.run(open_loop(commands, users, args.rate, args.open_duration))
                figures.append((f, "P3 p99 < 20 ms at 1,000/s, no errors"))
            if "balance" in only:
                f = wrk(
                    "GET balance",
                    queries,
                    "read.lua",
                    OGP_WRK_DATA=str(users_file),
                    OGP_WRK_PATH="/api/payment/balance",
                    **w,
                )
                figures.append((f, "P6 >= 3,000/s"))
            if "history" in only:
                f = wrk(
                    "GET history (20)",
                    queries,
                    "read.lua",
                    OGP_WRK_DATA=str(users_file),
                    OGP_WRK_PATH="/api/payment/transactions?limit=20",
                    **w,
                )
                figures.append((f, "(P6: no figure of its own)"))
            if "webhook" in only:
                f = wrk(
                    "POST webhook (c=8)",
                    commands,
                    "webhook.lua",
                    duration=args.duration,
                    connections=8,
                    threads=2,
                    OGP_WRK_DATA=str(hooks_file),
                )
                figures.append((f, "P7 p99 < 50 ms at concurrency 8"))
            # The warm-up's payments reach the ledger too.
            commands_sent = warm.ok + sum(
                f.ok for f, _ in figures if f.name.startswith(("POST pay", "POST transfer", "pay @"))
            )
            print(
                f"\nfront door, {args.workers} uvicorn worker(s) per API, wrk -t{args.threads} -c{args.connections},"
                f" {args.duration}s per run (latencies in ms; cpu ms = command API CPU per 2xx):"
            )
            print(HEADER)
            for f, target in figures:
                print(f.line(target))
            if not args.no_processor and commands_sent:
                posted = settle(settings, commands_sent)
                verdict = "all reached the ledger" if posted >= commands_sent else "SOME MISSING"
                print(f"\nledger: {posted} payments/transfers posted SUCCESS of {commands_sent} accepted: {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
