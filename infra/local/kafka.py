"""A single-node Apache Kafka broker (KRaft, broker+controller in one JVM) from Maven Central jars.

No Docker and no release tarball: ``ensure_jars`` resolves ``org.apache.kafka:kafka_2.13`` plus the
log4j2 backend with ``mvn`` into a cache folder outside the repository, and :class:`KafkaBroker` runs
``kafka.Kafka`` from that folder under a pid file (:class:`ManagedProcess`).
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import os
import re
import shutil
import socket
import struct
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from io import BytesIO
from pathlib import Path

from aiokafka.protocol.metadata import MetadataRequest_v5

from infra.local.process import ManagedProcess, StackError, port_open, require

POM = Path(__file__).with_name("kafka-pom.xml")
MARKER = ".jars-complete"
NODE_ID = 1


# -- jars ------------------------------------------------------------------------------------------
def log4j_version_for(kafka_version: str) -> str:
    """The log4j2 version the given Kafka 4.x release line ships in its tarball's libs/."""
    major, minor = _major_minor(kafka_version)
    if major < 4:
        raise StackError(
            f"Kafka {kafka_version} is not supported by infra.local.kafka (it runs Kafka 4.x with log4j2); "
            "set OGP_KAFKA_VERSION to a 4.x release"
        )
    if (major, minor) <= (4, 1):
        return "2.24.3"
    # Kafka 4.2 and later are on the 2.25 line (2.25.5 since KAFKA-20791, backported to 4.2/4.3).
    return "2.25.5"


def _major_minor(version: str) -> tuple[int, int]:
    try:
        parts = version.split(".")
        return int(parts[0]), int(parts[1])
    except (IndexError, ValueError) as exc:
        raise StackError(f"not a Kafka version: {version!r} (expected e.g. 4.3.1)") from exc


def _key_jars(version: str, log4j: str) -> list[str]:
    return [
        f"kafka_2.13-{version}.jar",
        f"kafka-clients-{version}.jar",
        f"kafka-server-{version}.jar",
        f"kafka-server-common-{version}.jar",
        f"kafka-raft-{version}.jar",
        f"kafka-metadata-{version}.jar",
        f"kafka-storage-{version}.jar",
        f"kafka-group-coordinator-{version}.jar",
        f"kafka-share-coordinator-{version}.jar",
        f"kafka-transaction-coordinator-{version}.jar",
        f"log4j-api-{log4j}.jar",
        f"log4j-core-{log4j}.jar",
        f"log4j-slf4j-impl-{log4j}.jar",
    ]


def _jars_complete(libs: Path, version: str, log4j: str) -> bool:
    return (libs.parent / MARKER).is_file() and all((libs / jar).is_file() for jar in _key_jars(version, log4j))


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_jars(version: str, cache_dir: Path) -> Path:
    """The folder holding every jar of Kafka ``version`` (``cache_dir/<version>/libs``), resolved once.

    Idempotent and safe for concurrent callers (an fcntl lock serialises resolution); the marker file
    is written only after the key jars are checked, so an interrupted download is redone.
    """
    log4j = log4j_version_for(version)
    home = Path(cache_dir).expanduser() / version
    libs = home / "libs"
    if _jars_complete(libs, version, log4j):
        return libs
    mvn = require("mvn")
    _java()
    with _file_lock(home / ".lock"):
        if _jars_complete(libs, version, log4j):  # another process finished while we waited
            return libs
        (home / MARKER).unlink(missing_ok=True)
        for leftover in home.glob("libs.partial-*"):  # from an interrupted run (we hold the lock)
            shutil.rmtree(leftover, ignore_errors=True)
        staging = home / f"libs.partial-{os.getpid()}"
        # mvn runs on a copy of the pom inside the cache, so nothing (target/, ...) lands in the repo.
        pom = home / "pom.xml"
        shutil.copyfile(POM, pom)
        log = home / "mvn.log"
        argv = [
            mvn,
            "-B",
            "-q",
            "-Dstyle.color=never",
            "-f",
            str(pom),
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={staging}",
            f"-Dkafka.version={version}",
            f"-Dlog4j.version={log4j}",
        ]
        with open(log, "wb") as out:
            out.write((" ".join(argv) + "\n").encode())
            out.flush()
            try:
                result = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, cwd=home, timeout=1800)
            except subprocess.TimeoutExpired as exc:
                raise StackError(f"mvn timed out resolving Kafka {version} jars; log {log}") from exc
        missing = [jar for jar in _key_jars(version, log4j) if not (staging / jar).is_file()]
        if result.returncode != 0 or missing:
            shutil.rmtree(staging, ignore_errors=True)
            why = f"exit {result.returncode}" if result.returncode != 0 else f"missing {', '.join(missing)}"
            raise StackError(f"resolving Kafka {version} jars with mvn failed ({why}{_first_error(log)}); log {log}")
        shutil.rmtree(libs, ignore_errors=True)
        staging.rename(libs)
        (home / MARKER).write_text(f"kafka {version}\nlog4j {log4j}\njars {len(list(libs.glob('*.jar')))}\n")
    return libs


def _first_error(log: Path) -> str:
    """``: <reason>`` from mvn's first [ERROR] line (e.g. a missing artifact), or ''."""
    try:
        for line in log.read_text(errors="replace").splitlines():
            if "[ERROR]" in line:
                reason = line.split("[ERROR]", 1)[1].strip()
                missing = re.search(r"Could not find artifact (\S+)|(\S+:\S+) was not found", reason)
                if missing:
                    reason = f"{missing.group(1) or missing.group(2)} not found on Maven Central"
                return f": {reason[:240]}" if reason else ""
    except OSError:
        pass
    return ""


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    return require("java", [Path(java_home) / "bin"] if java_home else [])


# -- health check ----------------------------------------------------------------------------------
def metadata_brokers(host: str, port: int, timeout: float = 5) -> list[tuple[int, str, int]]:
    """One Metadata (v5, no topics) request over a plain socket: the brokers as (node id, host, port).

    Synchronous on purpose, so it also works from code that already runs an event loop.
    """
    request = MetadataRequest_v5([], False)
    header = request.build_request_header(correlation_id=1, client_id="ogp-stack-health")
    payload = header.encode() + request.encode()
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        sock.sendall(struct.pack(">i", len(payload)) + payload)
        size = struct.unpack(">i", _recv_exactly(sock, 4))[0]
        body = BytesIO(_recv_exactly(sock, size))
    response_header = request.parse_response_header(body)
    if response_header.correlation_id != 1:
        raise OSError("metadata response with a foreign correlation id")
    response = request.RESPONSE_TYPE.decode(body)
    return [(b[0], b[1], b[2]) for b in response.brokers]


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < n:
        chunk = sock.recv(n - len(chunks))
        if not chunk:
            raise OSError("connection closed by the broker")
        chunks += chunk
    return bytes(chunks)


# -- broker ----------------------------------------------------------------------------------------
def _new_cluster_id() -> str:
    """22-char base64url UUID like ``kafka-storage random-uuid`` (never starting with '-')."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


class KafkaBroker:
    """A single-node KRaft Kafka (broker and controller in one process) on ``host:port``."""

    def __init__(
        self,
        data_dir: Path,
        port: int,
        controller_port: int,
        version: str,
        cache_dir: Path,
        host: str = "127.0.0.1",
        heap: str = "512m",
        *,
        quick_start: bool = True,
    ):
        """``quick_start`` trades peak throughput for a ~2x faster start: C1-only JIT plus an AppCDS
        archive of Kafka's classes (dumped into the jar cache by the first broker that runs and stops
        cleanly). Set it False for throughput measurements."""
        if port == controller_port:
            raise StackError(f"Kafka broker and controller ports must differ (both {port})")
        self.data_dir = Path(data_dir)
        self.port = port
        self.controller_port = controller_port
        self.version = version
        self.cache_dir = Path(cache_dir).expanduser()
        self.host = host
        self.heap = heap
        self.quick_start = quick_start
        self.process = ManagedProcess("kafka", self.data_dir)
        self.bootstrap = f"{host}:{port}"

    # -- files -------------------------------------------------------------------------------------
    @property
    def log_dirs(self) -> Path:
        """Kafka's data (its "log.dirs"): partitions and the KRaft metadata log."""
        return self.data_dir / "data"

    @property
    def logs_dir(self) -> Path:
        """The broker's own log files (server.log)."""
        return self.data_dir / "logs"

    @property
    def server_properties(self) -> Path:
        return self.data_dir / "server.properties"

    @property
    def log4j_properties(self) -> Path:
        return self.data_dir / "log4j2.properties"

    @property
    def cluster_id_file(self) -> Path:
        return self.data_dir / "cluster.id"

    def cluster_id(self) -> str:
        """The cluster id, generated on first use and kept in ``data_dir/cluster.id``."""
        try:
            cid = self.cluster_id_file.read_text().strip()
            if cid:
                return cid
        except OSError:
            pass
        cid = _new_cluster_id()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.cluster_id_file.write_text(cid + "\n")
        return cid

    def _properties(self) -> dict[str, str]:
        h, p, c = self.host, self.port, self.controller_port
        return {
            # Single node: broker and controller in one process, static quorum of one voter.
            "process.roles": "broker,controller",
            "node.id": str(NODE_ID),
            "controller.quorum.voters": f"{NODE_ID}@{h}:{c}",
            "listeners": f"PLAINTEXT://{h}:{p},CONTROLLER://{h}:{c}",
            # Advertise only the broker listener (advertising the controller breaks transaction markers).
            "advertised.listeners": f"PLAINTEXT://{h}:{p}",
            "inter.broker.listener.name": "PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.log_dirs),
            # Topics are created by code (schemas.topics), never on first use.
            "auto.create.topics.enable": "false",
            "default.replication.factor": "1",
            "min.insync.replicas": "1",
            "num.partitions": "1",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "share.coordinator.state.topic.num.partitions": "1",
            "group.initial.rebalance.delay.ms": "0",
            # Fast startup: the broker is unfenced after its first heartbeats, so beat often.
            "broker.heartbeat.interval.ms": "500",
            "broker.session.timeout.ms": "6000",
            # A laptop-sized broker.
            "num.network.threads": "2",
            "num.io.threads": "4",
            "num.recovery.threads.per.data.dir": "1",
            "log.retention.hours": "168",
            "log.retention.check.interval.ms": "300000",
            "log.segment.bytes": "1073741824",
            "delete.topic.enable": "true",
        }

    def _write_config(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        self.log_dirs.mkdir(parents=True, exist_ok=True)
        lines = ["# Written by infra.local.kafka on every start; edit KafkaBroker._properties instead."]
        lines += [f"{k}={_escape(v)}" for k, v in self._properties().items()]
        _write_if_changed(self.server_properties, "\n".join(lines) + "\n")
        _write_if_changed(self.log4j_properties, _log4j2_properties(self.logs_dir))

    def formatted(self) -> bool:
        return (self.log_dirs / "meta.properties").is_file()

    def _format(self, libs: Path, timeout: float) -> None:
        """Format the data dir once: like ``kafka-storage format -t <id>`` (static voters: no --standalone).

        The real StorageTool runs only the first time per Kafka version (~1 s of JVM); its output
        (``meta.properties`` + ``bootstrap.checkpoint``, nothing else with static voters) is kept as a
        template in the jar cache, and later data dirs get a copy with a fresh cluster and directory id.
        """
        if self.formatted():
            return
        template = self.cache_dir / self.version / "format-template"
        if self._format_from_template(template):
            return
        self._run_storage_tool(libs, timeout)
        _save_format_template(self.log_dirs, template)

    def _format_from_template(self, template: Path) -> bool:
        try:
            meta = _read_properties(template / "meta.properties")
            files = [f for f in template.iterdir() if f.name != "meta.properties"]
        except OSError:
            return False
        if meta.get("node.id") != str(NODE_ID) or meta.get("version") != "1" or not files:
            return False
        meta["cluster.id"] = self.cluster_id()
        if "directory.id" in meta:
            meta["directory.id"] = _new_cluster_id()
        for f in files:
            if f.is_file():
                shutil.copyfile(f, self.log_dirs / f.name)
        # meta.properties last: its presence is what marks the dir as formatted.
        _write_if_changed(
            self.log_dirs / "meta.properties",
            "#\n#Written by infra.local.kafka from the StorageTool's output\n"
            + "".join(f"{k}={v}\n" for k, v in meta.items()),
        )
        return True

    def _run_storage_tool(self, libs: Path, timeout: float) -> None:
        log = self.logs_dir / "format.log"
        argv = [
            _java(),
            "-Xms64m",
            "-Xmx256m",
            "-XX:+UseSerialGC",
            "-XX:TieredStopAtLevel=1",
            "-XX:-UsePerfData",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.log4j_properties}",
            f"-Dkafka.logs.dir={self.logs_dir}",
            "-cp",
            f"{libs}/*",
            "kafka.tools.StorageTool",
            "format",
            "--ignore-formatted",
            "-t",
            self.cluster_id(),
            "-c",
            str(self.server_properties),
        ]
        with open(log, "wb") as out:
            try:
                result = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, timeout=timeout)
            except subprocess.TimeoutExpired as exc:
                raise StackError(f"formatting Kafka storage timed out; log {log}") from exc
        if result.returncode != 0 or not self.formatted():
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
            raise StackError(f"formatting Kafka storage failed (exit {result.returncode}); log {log}:\n{tail}")

    def _jvm_args(self, libs: Path) -> list[str]:
        java = _java()
        xms = "256m" if _mebibytes(self.heap) >= 256 else self.heap
        quick: list[str] = []
        if self.quick_start:
            quick.append("-XX:TieredStopAtLevel=1")
            cds = _Cds(self.cache_dir / self.version, libs, java)
            cds.promote_pending(self.data_dir)
            quick += cds.jvm_flags(self.data_dir)
        return [
            java,
            f"-Xms{xms}",
            f"-Xmx{self.heap}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:InitiatingHeapOccupancyPercent=35",
            "-XX:+ExplicitGCInvokesConcurrent",
            "-XX:MaxInlineLevel=15",
            "-XX:-UsePerfData",
            *quick,
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.log4j_properties}",
            "-Dlog4j2.disableJmx=true",
            f"-Dkafka.logs.dir={self.logs_dir}",
            "-cp",
            f"{libs}/*",
            "kafka.Kafka",
            str(self.server_properties),
        ]

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self, timeout: float = 120) -> None:
        """Idempotent: resolve jars, write config, format once, start and wait for a metadata answer."""
        deadline = time.monotonic() + timeout
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with _file_lock(self.data_dir / ".start.lock"):
            if self.running():
                self._wait_healthy(deadline)
                return
            for what, port in (("broker", self.port), ("controller", self.controller_port)):
                if port_open(self.host, port):
                    raise StackError(
                        f"Kafka {what} port {self.host}:{port} is already in use by another process "
                        f"(not the broker with pid file {self.process.pid_file})"
                    )
            libs = ensure_jars(self.version, self.cache_dir)
            self._write_config()
            self._format(libs, max(10.0, deadline - time.monotonic()))
            self.process.start(self._jvm_args(libs), cwd=self.data_dir)
            try:
                self._wait_healthy(deadline)
            except StackError:
                self.process.stop(timeout=10)  # leave no half-started JVM behind
                raise

    def _wait_healthy(self, deadline: float) -> None:
        while True:
            if self.healthy(timeout=2):
                return
            if not self.process.running():
                raise StackError(f"Kafka {self.version} exited during startup; {self._log_tails()}")
            if time.monotonic() >= deadline:
                raise StackError(f"Kafka {self.version} not ready on {self.bootstrap} in time; {self._log_tails()}")
            time.sleep(0.1)

    def _log_tails(self, lines: int = 25) -> str:
        server_log = self.logs_dir / "server.log"
        try:
            server_tail = "\n".join(server_log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            server_tail = ""
        return f"log {self.process.log_file}:\n{self.process.tail(lines)}\nserver log {server_log}:\n{server_tail}"

    def stop(self, timeout: float = 60) -> bool:
        """SIGTERM (controlled shutdown), wait up to ``timeout``, then SIGKILL. True if it was running."""
        pid = self.process.pid()
        stopped = self.process.stop(timeout=timeout)
        if pid is not None:
            _reap_child(pid)
        if self.quick_start and not self.process.running():
            home = self.cache_dir / self.version
            try:
                _Cds(home, home / "libs", _java()).promote_pending(self.data_dir)
            except (StackError, OSError):
                pass  # the archive is an optimisation only
        return stopped

    def running(self) -> bool:
        return self.process.running()

    def healthy(self, timeout: float = 5) -> bool:
        """True when the broker answers a metadata request and lists itself (registered, unfenced)."""
        if not self.running():
            return False
        try:
            brokers = metadata_brokers(self.host, self.port, timeout=timeout)
        except Exception:  # noqa: BLE001 - refused, reset, timeout, or a garbled answer: not healthy (yet)
            return False
        return any(node_id == NODE_ID for node_id, _, _ in brokers)


def _reap_child(pid: int) -> None:
    """Collect the exit status if the JVM was our child (ManagedProcess treats a zombie as gone)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except (ChildProcessError, OSError):
        pass


def _read_properties(path: Path) -> dict[str, str]:
    """The simple ``key=value`` lines of a Java properties file (what Kafka writes for meta.properties)."""
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "!")) and "=" in line:
            key, value = line.split("=", 1)
            out[key.strip()] = value.strip()
    return out


def _save_format_template(formatted_dir: Path, template: Path) -> None:
    """Keep the StorageTool's output (top-level files only) for the next data dir; atomic, best effort."""
    if template.is_dir():
        return
    staging = template.with_name(f"{template.name}.partial-{os.getpid()}")
    try:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        if any(p.is_dir() for p in formatted_dir.iterdir()):
            return  # unexpected layout (e.g. a bootstrap snapshot): keep running the real tool
        for f in formatted_dir.iterdir():
            shutil.copyfile(f, staging / f.name)
        staging.rename(template)
    except OSError:
        pass
    finally:
        shutil.rmtree(staging, ignore_errors=True)


class _Cds:
    """An AppCDS (dynamic class-data sharing) archive of the broker's classes, kept in the jar cache.

    The first quick-start broker runs with ``-XX:ArchiveClassesAtExit`` into a pending file; after it
    has exited, the file is checked (``-Xshare:on -XX:+VerifySharedSpaces``: a truncated archive would
    crash the JVM, not just be ignored) and only then renamed into place. Later brokers map it with
    ``-XX:SharedArchiveFile``. The name is keyed on the JVM build and the jar set, so a JDK upgrade or
    re-resolved jars start a new archive.
    """

    def __init__(self, home: Path, libs: Path, java: str):
        self.home = home
        self.libs = libs
        self.java = java
        self.dir = home / "cds"

    def _key(self) -> str:
        real = Path(os.path.realpath(self.java))
        parts = [str(real), str(self.libs)]
        for f in (real, real.parent.parent / "lib" / "server" / "libjvm.so", self.home / MARKER):
            try:
                st = f.stat()
                parts.append(f"{f}:{st.st_size}:{st.st_mtime_ns}")
            except OSError:
                parts.append(f"{f}:-")
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]

    @property
    def archive(self) -> Path:
        return self.dir / f"kafka-{self._key()}.jsa"

    def jvm_flags(self, data_dir: Path) -> list[str]:
        archive = self.archive
        if archive.is_file():
            return [f"-XX:SharedArchiveFile={archive}", "-Xlog:cds=off", "-Xlog:cds+dynamic=off"]
        if self._failures() >= 3:
            return []
        self.dir.mkdir(parents=True, exist_ok=True)
        pending = archive.with_name(f"{archive.stem}.{os.getpid()}-{uuid.uuid4().hex[:8]}.pending")
        (data_dir / "cds.pending").write_text(f"{pending}\n")
        return [f"-XX:ArchiveClassesAtExit={pending}", "-Xlog:cds=off", "-Xlog:cds+dynamic=off"]

    def promote_pending(self, data_dir: Path) -> None:
        """After the dumping broker exited: verify its archive and move it into place (or drop it)."""
        record = data_dir / "cds.pending"
        try:
            pending = Path(record.read_text().strip())
        except OSError:
            return
        if ManagedProcess("kafka", data_dir).running():
            return
        record.unlink(missing_ok=True)
        if not pending.is_file():
            return
        if pending.parent != self.dir or not pending.name.startswith(self.archive.stem + "."):
            pending.unlink(missing_ok=True)  # made for another JVM or jar set
            return
        crash_log = self.dir / f"verify-{os.getpid()}.log"
        try:
            ok = (
                subprocess.run(
                    [
                        self.java,
                        "-Xshare:on",
                        "-XX:+VerifySharedSpaces",
                        f"-XX:SharedArchiveFile={pending}",
                        f"-XX:ErrorFile={crash_log}",
                        "-cp",
                        f"{self.libs}/*",
                        "-version",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    timeout=60,
                ).returncode
                == 0
            )
        except (OSError, subprocess.TimeoutExpired):
            ok = False
        crash_log.unlink(missing_ok=True)
        if ok:
            os.replace(pending, self.archive)
        else:
            pending.unlink(missing_ok=True)
            self.archive.with_suffix(".failed").write_text(f"{self._failures() + 1}\n")

    def _failures(self) -> int:
        """How many dumped archives did not verify (after 3 we stop trying: the JVM may lack CDS)."""
        try:
            return int(self.archive.with_suffix(".failed").read_text().strip() or 0)
        except (OSError, ValueError):
            return 0


def _mebibytes(size: str) -> int:
    units = {"k": 1 / 1024, "m": 1, "g": 1024}
    s = size.strip().lower()
    try:
        return int(float(s[:-1]) * units[s[-1]]) if s[-1] in units else int(s) // (1024 * 1024)
    except (ValueError, IndexError) as exc:
        raise StackError(f"not a JVM heap size: {size!r} (expected e.g. 512m)") from exc


def _escape(value: str) -> str:
    """Java properties escaping for values (paths may contain backslashes or colons)."""
    return value.replace("\\", "\\\\")


def _write_if_changed(path: Path, text: str) -> None:
    try:
        if path.read_text() == text:
            return
    except OSError:
        pass
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _log4j2_properties(logs_dir: Path) -> str:
    """log4j2 in the properties format (Kafka 4 ships YAML, which would need jackson-dataformat-yaml).

    Everything at INFO goes to ``logs/server.log`` (rolling, 3 x 10 MB); the process log (stdout) gets
    WARN and above plus the "Kafka Server started" line.
    """
    server_log = logs_dir / "server.log"
    return f"""\
status = warn
name = ogp-kafka
# Kafka logs during its own shutdown hook; log4j's hook would close the appenders first.
shutdownHook = disable

appender.stdout.type = Console
appender.stdout.name = STDOUT
appender.stdout.layout.type = PatternLayout
appender.stdout.layout.pattern = [%d] %p %m (%c)%n

appender.server.type = RollingFile
appender.server.name = SERVER
appender.server.fileName = {server_log}
appender.server.filePattern = {server_log}.%i
appender.server.layout.type = PatternLayout
appender.server.layout.pattern = [%d] %p %m (%c)%n
appender.server.policies.type = Policies
appender.server.policies.size.type = SizeBasedTriggeringPolicy
appender.server.policies.size.size = 10MB
appender.server.strategy.type = DefaultRolloverStrategy
appender.server.strategy.max = 3

rootLogger.level = INFO
rootLogger.appenderRef.server.ref = SERVER
rootLogger.appenderRef.stdout.ref = STDOUT
rootLogger.appenderRef.stdout.level = WARN

logger.started.name = kafka.server.KafkaRaftServer
logger.started.level = INFO
logger.started.additivity = false
logger.started.appenderRef.server.ref = SERVER
logger.started.appenderRef.stdout.ref = STDOUT

logger.request.name = kafka.request.logger
logger.request.level = WARN
"""
