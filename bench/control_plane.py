"""Control-plane benchmark: shoal against the boto3 client's own ceiling.

    python bench/control_plane.py [--quick]

Two servers run on free 127.0.0.1 ports:

* the reference server (bench/reference_server.py): uvicorn with shoal's
  settings answering every POST with a canned SubmitJob response, i.e. the
  most any server could give this client on this machine;
* `python -m shoal server` on a fresh temporary data directory.

Phase 1 measures SubmitJob throughput through boto3 with 1 and 8 threads (one
client per thread) against both, and prints shoal's share of the reference.
The time is split into short rounds that alternate between the two servers,
and rates are the median round's, so a noisy neighbour or CPU throttling
moves the ratio little; the CPU time each process spent per call is shown
under each line.

shoal runs with --no-engine: submitted jobs stay SUBMITTED, nothing runs.

Phase 2 stops shoal, stores many jobs straight through the service layer
(`shoal.service.submit.submit`, batched into few SQLite transactions), restarts
it, and measures the latency of DescribeJobs and ListJobs calls through boto3
next to the same call against the reference server. A "raw HTTP" line under
each shows the same request sent without boto3, which separates the server's
time from the client's (botocore's response parsing grows with the response).

Everything runs on loopback; subprocesses and temporary directories are
removed on exit, also on error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import http.client
import json
import os
import platform
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import boto3
from botocore.config import Config

from shoal.config import Settings
from shoal.runtime import build
from shoal.service.submit import submit
from shoal.store.base import Transaction

BENCH_DIR = Path(__file__).resolve().parent
REGION = "us-east-1"
ACCESS_KEY, SECRET_KEY = "AKIDSHOALBENCH", "secret"  # shoal checks no signatures

CE_NAME = "bench-ce"
QUEUE = "bench-q"
OTHER_QUEUE = "bench-other-q"
DEFINITION = "bench-def"
SUBMIT_PARAMS = {"jobName": "bench-submit", "jobQueue": QUEUE, "jobDefinition": DEFINITION}

DISTINCT_NAMES = 1000  # preloaded jobs cycle through job-0000 .. job-0999
NAME_EXACT = "job-0042"
NAME_PREFIX = "job-004*"  # ten names
NAME_ALL = "job-*"  # every preloaded name
SUBMIT_TARGET = 0.70
NOISY = 0.15  # other processes' CPU use (share of one CPU) that makes a run suspect
WARMUP_CALLS = 20
PRELOAD_BATCH = 5000  # jobs per SQLite transaction while preloading


@dataclass(frozen=True, slots=True)
class Profile:
    duration_s: float  # per server and thread count, split into `rounds`
    rounds: int
    total_jobs: int
    latency_calls: int


FULL = Profile(duration_s=5.0, rounds=5, total_jobs=100_000, latency_calls=200)
QUICK = Profile(duration_s=2.0, rounds=4, total_jobs=10_000, latency_calls=200)


def say(line: str = "") -> None:
    print(line, flush=True)


# -- subprocesses ---------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServerProcess:
    """A server subprocess on a free loopback port, its output in a log file."""

    name: str
    argv: list[str]  # without --port
    log_path: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        self.port = free_port()
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [*self.argv, "--port", str(self.port)], stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited at start:\n{self.log_tail()}")
            with contextlib.suppress(OSError):
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
                try:
                    conn.request("GET", "/health")
                    if conn.getresponse().status == 200:
                        return
                finally:
                    conn.close()
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not answer in {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def cpu_seconds(self) -> float | None:
        """User + system CPU time the process has used so far (Linux /proc), else None."""
        if self.proc is None:
            return None
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        # utime and stime are fields 14 and 15 of stat(5); the split drops the first two
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def machine_busy_seconds() -> float | None:
    """CPU time the whole machine has been busy (Linux /proc/stat, steal included)."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


class NoiseMeter:
    """How much CPU the rest of the machine took while the benchmark measured.

    Busy time of the whole machine minus what this process and the servers
    used, as a share of one CPU: other work on the machine skews every number
    here, so the summary flags it.
    """

    def __init__(self, servers: list[ServerProcess]) -> None:
        self._servers = servers
        self._start = self._sample()
        self._wall = time.perf_counter()

    def _sample(self) -> float | None:
        busy = machine_busy_seconds()
        own = [s.cpu_seconds() for s in self._servers]
        if busy is None or None in own:
            return None
        return busy - time.process_time() - sum(x for x in own if x is not None)

    def other_share(self) -> float | None:
        end = self._sample()
        if end is None or self._start is None:
            return None
        return max(0.0, end - self._start) / (time.perf_counter() - self._wall)


# -- clients ----------------------------------------------------------------------


def make_client(url: str) -> Any:
    """A boto3 Batch client on its own session (sessions are not thread-safe)."""
    return boto3.session.Session().client(
        "batch",
        endpoint_url=url,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        config=Config(retries={"mode": "standard", "max_attempts": 1}),
    )


class RawClient:
    """A keep-alive HTTP/1.1 connection that posts JSON as boto3 would, minus boto3.

    uvicorn closes connections idle for 5 s; one idle for over 2 s is reopened
    before use (in a warm-up call, as `measure` always starts with those).
    """

    def __init__(self, port: int) -> None:
        self._conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self._last_used = time.monotonic()

    def post(self, path: str, doc: dict[str, Any]) -> bytes:
        if time.monotonic() - self._last_used > 2.0:
            self._conn.close()  # the next request opens a new connection
        body = json.dumps(doc).encode()
        self._conn.request("POST", path, body, {"Content-Type": "application/json"})
        response = self._conn.getresponse()
        payload = response.read()
        self._last_used = time.monotonic()
        if response.status != 200:
            raise RuntimeError(f"POST {path}: HTTP {response.status} {payload[:300]!r}")
        return payload

    def close(self) -> None:
        self._conn.close()


def setup_resources(url: str) -> None:
    """A compute environment, two queues on it and a job definition (as tests/conftest.py)."""
    client = make_client(url)
    ce = client.create_compute_environment(
        computeEnvironmentName=CE_NAME,
        type="MANAGED",
        computeResources={"type": "EC2", "minvCpus": 0, "maxvCpus": 16},
    )["computeEnvironmentArn"]
    for name in (QUEUE, OTHER_QUEUE):
        client.create_job_queue(
            jobQueueName=name,
            priority=1,
            computeEnvironmentOrder=[{"order": 1, "computeEnvironment": ce}],
        )
    client.register_job_definition(
        jobDefinitionName=DEFINITION,
        type="container",
        containerProperties={
            "image": "busybox",
            "command": ["true"],
            "resourceRequirements": [
                {"type": "VCPU", "value": "1"},
                {"type": "MEMORY", "value": "128"},
            ],
        },
    )
    client.close()


# -- throughput -------------------------------------------------------------------


@dataclass(slots=True)
class Throughput:
    """SubmitJob calls over some wall time, with the CPU both sides spent on them."""

    calls: int = 0
    seconds: float = 0.0
    client_cpu_s: float = 0.0  # this process: boto3 and its threads
    server_cpu_s: float | None = 0.0  # the server process, where /proc tells

    @property
    def rate(self) -> float:
        return self.calls / self.seconds

    def add(self, other: Throughput) -> None:
        self.calls += other.calls
        self.seconds += other.seconds
        self.client_cpu_s += other.client_cpu_s
        if self.server_cpu_s is not None and other.server_cpu_s is not None:
            self.server_cpu_s += other.server_cpu_s
        else:
            self.server_cpu_s = None

    def cpu_per_call(self) -> str:
        text = f"client {self.client_cpu_s / self.calls * 1e6:.0f} us"
        if self.server_cpu_s is not None:
            text += f", server {self.server_cpu_s / self.calls * 1e6:.0f} us"
        return text


class SubmitLoad:
    """`threads` boto3 clients of one server, each driven by its own thread.

    The clients are created and warmed up once; `run` can then be called for
    several timed rounds, which `rounds` keeps.
    """

    def __init__(self, server: ServerProcess, threads: int) -> None:
        self.server = server
        self.clients = [make_client(server.url) for _ in range(threads)]
        self.rounds: list[Throughput] = []
        self.calls_made = 0  # every SubmitJob answered, warm-up included
        for client in self.clients:
            for _ in range(WARMUP_CALLS):
                client.submit_job(**SUBMIT_PARAMS)
                self.calls_made += 1

    def run(self, duration: float) -> Throughput:
        threads = len(self.clients)
        counts = [0] * threads
        errors: list[BaseException] = []
        barrier = threading.Barrier(threads + 1)
        deadline = 0.0

        def worker(index: int) -> None:
            client = self.clients[index]
            barrier.wait()
            n = 0
            try:
                while time.perf_counter() < deadline:
                    client.submit_job(**SUBMIT_PARAMS)
                    n += 1
            except BaseException as e:
                errors.append(e)
            counts[index] = n

        workers = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(threads)]
        for w in workers:
            w.start()
        server_cpu = self.server.cpu_seconds()
        client_cpu = time.process_time()
        start = time.perf_counter()
        deadline = start + duration
        barrier.wait()
        for w in workers:
            w.join()
        elapsed = time.perf_counter() - start  # includes the calls in flight at the deadline
        client_cpu = time.process_time() - client_cpu
        server_end = self.server.cpu_seconds()
        self.calls_made += sum(counts)
        if errors:
            raise RuntimeError(f"SubmitJob failed during the run: {errors[0]!r}") from errors[0]
        used = None if server_cpu is None or server_end is None else server_end - server_cpu
        result = Throughput(sum(counts), elapsed, client_cpu, used)
        self.rounds.append(result)
        return result

    def close(self) -> None:
        for client in self.clients:
            client.close()


@dataclass(frozen=True, slots=True)
class SubmitResult:
    """Both servers' rounds. Rates are per-round medians: a round that another
    process on the machine disturbed moves the result little."""

    threads: int
    shoal: list[Throughput]
    reference: list[Throughput]

    @property
    def shoal_rate(self) -> float:
        return statistics.median(t.rate for t in self.shoal)

    @property
    def reference_rate(self) -> float:
        return statistics.median(t.rate for t in self.reference)

    @property
    def ratio(self) -> float:
        return self.shoal_rate / self.reference_rate

    def line(self) -> str:
        plural = "thread" if self.threads == 1 else "threads"
        return (
            f"submit {self.threads} {plural}: shoal {self.shoal_rate:.0f} req/s, "
            f"reference {self.reference_rate:.0f} req/s, ratio {self.ratio:.2f} "
            f"(target >= {SUBMIT_TARGET:.2f})"
        )

    def detail(self) -> str:
        ratios = [s.rate / r.rate for s, r in zip(self.shoal, self.reference, strict=True)]
        shoal, reference = Throughput(), Throughput()
        for t in self.shoal:
            shoal.add(t)
        for t in self.reference:
            reference.add(t)
        return (
            f"    median of {len(ratios)} alternating rounds (round ratios "
            f"{min(ratios):.2f}..{max(ratios):.2f}); CPU per call: "
            f"shoal {shoal.cpu_per_call()}; reference {reference.cpu_per_call()}"
        )


def submit_benchmark(
    shoal: ServerProcess, reference: ServerProcess, threads: int, profile: Profile
) -> tuple[SubmitResult, int]:
    """SubmitJob throughput of both servers, in alternating rounds so drift hits both.

    Returns the result and how many jobs shoal stored on the way.
    """
    ref_load, shoal_load = SubmitLoad(reference, threads), SubmitLoad(shoal, threads)
    seconds = profile.duration_s / profile.rounds
    try:
        for r in range(profile.rounds):
            for load in (ref_load, shoal_load) if r % 2 == 0 else (shoal_load, ref_load):
                load.run(seconds)
    finally:
        ref_load.close()
        shoal_load.close()
    result = SubmitResult(threads, shoal_load.rounds, ref_load.rounds)
    return result, shoal_load.calls_made


# -- preload --------------------------------------------------------------------


class _OneTransaction:
    """A Store whose every transaction is one already open on the real store.

    It lets `submit()` run unchanged while thousands of jobs share one SQLite
    commit. An exception from `submit()` still rolls the whole batch back.
    """

    def __init__(self, tx: Transaction) -> None:
        self._tx = tx

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Transaction]:
        yield self._tx

    @contextlib.contextmanager
    def read(self) -> Iterator[Transaction]:
        yield self._tx

    def close(self) -> None:
        pass


def preload(data_dir: Path, count: int) -> list[str]:
    """Store `count` SUBMITTED jobs through the service layer; the ids of those in QUEUE.

    Every other job goes to QUEUE, the rest to OTHER_QUEUE; names cycle
    through DISTINCT_NAMES values, so a JOB_NAME filter matches a few of each.
    """
    runtime = build(Settings(data_dir=data_dir, engine=False))
    store = runtime.ctx.store
    ids: list[str] = []
    try:
        for first in range(0, count, PRELOAD_BATCH):
            with store.transaction() as tx:
                ctx = dataclasses.replace(runtime.ctx, store=_OneTransaction(tx))
                for i in range(first, min(first + PRELOAD_BATCH, count)):
                    params = {
                        "jobName": f"job-{(i // 2) % DISTINCT_NAMES:04d}",
                        "jobQueue": QUEUE if i % 2 == 0 else OTHER_QUEUE,
                        "jobDefinition": DEFINITION,
                    }
                    job = submit(ctx, params, payload_size=len(json.dumps(params)), token=None)
                    if i % 2 == 0:
                        ids.append(job["jobId"])
    finally:
        store.close()
    return ids


# -- latency --------------------------------------------------------------------


def percentile(samples: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(samples)
    rank = max(1, -(-len(ordered) * q // 100))  # ceil
    return ordered[int(rank) - 1]


@dataclass(frozen=True, slots=True)
class Latency:
    samples_ms: list[float] = field(repr=False)

    @property
    def p50(self) -> float:
        return percentile(self.samples_ms, 50)

    @property
    def p99(self) -> float:
        return percentile(self.samples_ms, 99)


def measure(call: Callable[[int], object], calls: int, warmup: int = WARMUP_CALLS) -> Latency:
    """Wall time of `calls` sequential calls of call(i), after `warmup` untimed ones."""
    for i in range(warmup):
        call(i)
    samples: list[float] = []
    for i in range(calls):
        t0 = time.perf_counter_ns()
        call(i)
        samples.append((time.perf_counter_ns() - t0) / 1e6)
    return Latency(samples)


@dataclass(frozen=True, slots=True)
class Operation:
    """One read benchmarked: the boto3 method and its arguments per call index."""

    label: str
    method: str
    wire_path: str
    kwargs: Callable[[int], dict[str, Any]]
    result_key: str
    expect: Callable[[int], bool]  # a check on the result count, so real work is measured
    calls: int


@dataclass(frozen=True, slots=True)
class LatencyResult:
    label: str
    shoal: Latency
    reference: Latency
    raw_shoal: Latency
    raw_reference: Latency

    def line(self, jobs: int) -> str:
        return (
            f"{self.label} with {jobs} jobs: p50 {self.shoal.p50:.1f} ms "
            f"p99 {self.shoal.p99:.1f} ms (reference call p50 {self.reference.p50:.1f} ms)"
        )

    def raw_line(self) -> str:
        return (
            f"    {len(self.shoal.samples_ms)} calls; raw HTTP, no boto3: "
            f"shoal p50 {self.raw_shoal.p50:.2f} ms p99 {self.raw_shoal.p99:.2f} ms "
            f"(reference p50 {self.raw_reference.p50:.2f} ms)"
        )


def preloaded_named(count: int, names: range) -> int:
    """How many of `count` preloaded jobs are in QUEUE with a name number in `names`."""
    return sum(1 for i in range(0, count, 2) if (i // 2) % DISTINCT_NAMES in names)


def read_operations(ids: list[str], calls: int, preloaded: int) -> list[Operation]:
    """The reads to time, each checked for the result size the preload implies."""
    rng = random.Random(7)
    batches = [rng.sample(ids, 100) for _ in range(calls + WARMUP_CALLS)]
    in_queue = preloaded_named(preloaded, range(DISTINCT_NAMES))

    def list_jobs(label: str, params: dict[str, Any], size: int, n: int = calls) -> Operation:
        return Operation(
            label=label,
            method="list_jobs",
            wire_path="/v1/listjobs",
            kwargs=lambda i: {"jobQueue": QUEUE, **params},
            result_key="jobSummaryList",
            expect=lambda got: got == size,
            calls=n,
        )

    def by_name(value: str) -> dict[str, Any]:
        return {"filters": [{"name": "JOB_NAME", "values": [value]}]}

    return [
        Operation(
            label="describe-jobs(100)",
            method="describe_jobs",
            wire_path="/v1/describejobs",
            kwargs=lambda i: {"jobs": batches[i % len(batches)]},
            result_key="jobs",
            expect=lambda got: got == 100,
            calls=calls,
        ),
        list_jobs("list-jobs(SUBMITTED, 100)", {"jobStatus": "SUBMITTED", "maxResults": 100}, 100),
        list_jobs(
            f"list-jobs(JOB_NAME={NAME_EXACT})",
            by_name(NAME_EXACT),
            preloaded_named(preloaded, range(42, 43)),
        ),
        list_jobs(
            f"list-jobs(JOB_NAME={NAME_PREFIX})",
            by_name(NAME_PREFIX),
            min(100, preloaded_named(preloaded, range(40, 50))),
        ),
        # Every preloaded job of the queue matches: shows how a wide prefix scales.
        list_jobs(
            f"list-jobs(JOB_NAME={NAME_ALL}, {in_queue} match)",
            by_name(NAME_ALL),
            min(100, in_queue),
            n=max(20, calls // 4),
        ),
        list_jobs("list-jobs(default: RUNNING, empty)", {}, 0),
    ]


def via_boto3(client: Any, op: Operation) -> Callable[[int], object]:
    method = getattr(client, op.method)
    return lambda i: method(**op.kwargs(i))


def via_raw(raw: RawClient, op: Operation) -> Callable[[int], object]:
    return lambda i: raw.post(op.wire_path, op.kwargs(i))


def measure_reads(
    operations: list[Operation], shoal_port: int, reference_port: int
) -> list[LatencyResult]:
    shoal = make_client(f"http://127.0.0.1:{shoal_port}")
    reference = make_client(f"http://127.0.0.1:{reference_port}")
    raw_shoal, raw_reference = RawClient(shoal_port), RawClient(reference_port)
    results: list[LatencyResult] = []
    try:
        for op in operations:
            got = len(getattr(shoal, op.method)(**op.kwargs(0))[op.result_key])
            if not op.expect(got):
                raise RuntimeError(f"{op.label}: unexpected result size {got}")
            results.append(
                LatencyResult(
                    label=op.label,
                    shoal=measure(via_boto3(shoal, op), op.calls),
                    reference=measure(via_boto3(reference, op), op.calls),
                    raw_shoal=measure(via_raw(raw_shoal, op), op.calls),
                    raw_reference=measure(via_raw(raw_reference, op), op.calls),
                )
            )
    finally:
        shoal.close()
        reference.close()
        raw_shoal.close()
        raw_reference.close()
    return results


# -- main -------------------------------------------------------------------------


def _raise_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def submit_phase(
    shoal: ServerProcess, reference: ServerProcess, profile: Profile
) -> tuple[list[SubmitResult], int]:
    """SubmitJob with 1 and 8 threads; the results and how many jobs shoal stored."""
    results: list[SubmitResult] = []
    stored = 0
    for threads in (1, 8):
        result, made = submit_benchmark(shoal, reference, threads, profile)
        stored += made
        results.append(result)
        say(result.line())
        say(result.detail())
    return results, stored


def preload_phase(data_dir: Path, count: int, already: int) -> list[str]:
    started = time.perf_counter()
    ids = preload(data_dir, count)
    seconds = time.perf_counter() - started
    say(
        f"preload: {count} jobs through the service layer in {seconds:.1f} s "
        f"({count / seconds:.0f} jobs/s); {already} more came from the submit runs"
    )
    return ids


def print_summary(
    submits: list[SubmitResult],
    reads: list[LatencyResult],
    stored: int,
    noise: dict[str, float | None],
) -> None:
    say()
    say("summary")
    for result in submits:
        verdict = "meets" if result.ratio >= SUBMIT_TARGET else "BELOW"
        say(
            f"  submit with {result.threads} thread(s): {result.ratio:.0%} of the reference "
            f"({verdict} the {SUBMIT_TARGET:.0%} target)"
        )
    say(
        f"  read latency with {stored} jobs stored: boto3 p50 / p99, and shoal's own "
        "share (raw HTTP p50 minus the reference's)"
    )
    for read in reads:
        own = read.raw_shoal.p50 - read.raw_reference.p50
        say(
            f"    {read.label:<40} {read.shoal.p50:6.1f} / {read.shoal.p99:6.1f} ms"
            f"   server {own:5.2f} ms"
        )
    shares = {phase: share for phase, share in noise.items() if share is not None}
    if shares:
        during = ", ".join(f"{share:.0%} during the {phase}" for phase, share in shares.items())
        say(f"  other processes on this machine used {during} (of one CPU)")
        if max(shares.values()) > NOISY:
            say("  WARNING: the machine was busy with other work; rerun on a quiet machine")


def run(profile: Profile, work: Path) -> None:
    started = time.perf_counter()
    say(
        f"shoal control-plane benchmark: python {platform.python_version()}, "
        f"{os.cpu_count()} cpus, SubmitJob for {profile.duration_s:g} s per server and "
        f"thread count ({profile.rounds} alternating rounds), "
        f"{profile.total_jobs} jobs for the read latencies"
    )
    data_dir = work / "data"
    reference = ServerProcess(
        "reference server",
        [sys.executable, str(BENCH_DIR / "reference_server.py")],
        work / "reference.log",
    )
    # --no-engine: jobs stay SUBMITTED, so this measures the control plane alone.
    shoal = ServerProcess(
        "shoal server",
        [sys.executable, "-m", "shoal", "server", "--no-engine", "--data-dir", str(data_dir)],
        work / "shoal.log",
    )
    noise: dict[str, float | None] = {}
    try:
        reference.start()
        shoal.start()
        setup_resources(shoal.url)

        meter = NoiseMeter([shoal, reference])
        submits, submitted = submit_phase(shoal, reference, profile)
        noise["submit runs"] = meter.other_share()

        shoal.stop()
        to_load = max(0, profile.total_jobs - submitted)
        ids = preload_phase(data_dir, to_load, submitted)
        shoal.start()

        meter = NoiseMeter([shoal, reference])
        operations = read_operations(ids, profile.latency_calls, to_load)
        reads = measure_reads(operations, shoal.port, reference.port)
        noise["latency runs"] = meter.other_share()
        for read in reads:
            say(read.line(submitted + to_load))
            say(read.raw_line())

        print_summary(submits, reads, submitted + to_load, noise)
        say(f"  total time {time.perf_counter() - started:.0f} s")
    except BaseException:
        for server in (shoal, reference):
            say(f"--- {server.name} log tail ---\n{server.log_tail()}")
        raise
    finally:
        shoal.stop()
        reference.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description="Benchmark shoal's control plane.")
    parser.add_argument(
        "--quick", action="store_true", help="2 s runs and 10,000 jobs instead of 5 s and 100,000"
    )
    args = parser.parse_args()
    # Only loopback is used; keep any configured proxy out of the way.
    os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    work = Path(tempfile.mkdtemp(prefix="shoal-bench-"))
    try:
        run(QUICK if args.quick else FULL, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
