"""Every performance scenario of sigma-exporter in one command.

    python bench/run.py            # full run (~6 min on 2 cores), writes bench/results/
    python bench/run.py --tiny     # seconds; CI runs this so the bench cannot rot
    python bench/run.py --poll-only  # poll CPU per round and the aiohttp floor (~3 min)

Prints a table (median, min, max per figure, and the ratios the goals name)
and writes the raw figures as JSON under bench/results/ (and a PNG of how
cost grows with targets unless --no-plot). The simulator and the exporter
are pinned to different cores where `taskset` exists; every process started
is stopped. Figures are reported, never asserted: no goal fails the run.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import importlib.util
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ports import free_port, port_block  # noqa: E402

from sigma_exporter.collect import exposition, samples  # noqa: E402
from sigma_exporter.config import format_duration  # noqa: E402
from sigma_exporter.source.client import DUMP_REQUEST, PROGRESS_REQUEST  # noqa: E402

PY = sys.executable
CLK = os.sysconf("SC_CLK_TCK")
OM_GZIP = {"Accept": "application/openmetrics-text; version=1.0.0",
           "Accept-Encoding": "gzip"}


# --- processes -------------------------------------------------------------------

def cores() -> tuple[list[str], list[str]]:
    """taskset prefixes: exporter on core 0, everything else on the others."""
    if shutil.which("taskset") and (os.cpu_count() or 1) >= 2:
        other = f"1-{(os.cpu_count() or 2) - 1}"
        return ["taskset", "-c", "0"], ["taskset", "-c", other]
    return [], []


EXPORTER_CORE, OTHER_CORES = cores()


@dataclass
class Proc:
    args: list[str]
    proc: subprocess.Popen[bytes] = field(init=False)

    def __post_init__(self) -> None:
        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, cwd=ROOT)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@contextmanager
def processes() -> Iterator[list[Proc]]:
    started: list[Proc] = []
    try:
        yield started
    finally:
        for p in reversed(started):
            p.stop()


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except (httpx.HTTPError, OSError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"timed out waiting for {what}")


def simulator(started: list[Proc], servers: int, first: int, *extra: str) -> Proc:
    sim = Proc([*OTHER_CORES, PY, "-m", "sigma_exporter.cli", "simulate", "--listen",
                f"127.0.0.1:{first}", "--servers", str(servers), "--static", *extra])
    started.append(sim)
    def listening() -> bool:  # a TCP connect: a faulty simulator may never answer
        with socket.create_connection(("127.0.0.1", first + servers - 1), timeout=2):
            return True

    wait_for(listening, 60, "simulator")
    return sim


def exporter(started: list[Proc], tmp: Path, urls: list[str], interval: float,
             extra_yaml: str = "") -> tuple[Proc, str]:
    timeout = min(5.0, interval / 2)
    config = tmp / f"sigma-{len(started)}.yml"
    lines = [f"defaults:\n  interval: {format_duration(interval)}\n"
             f"  timeout: {format_duration(timeout)}\n{extra_yaml}targets:"]
    lines += [f"  - name: s{i:04d}\n    url: {url}" for i, url in enumerate(urls)]
    config.write_text("\n".join(lines) + "\n")
    port = free_port()
    exp = Proc([*EXPORTER_CORE, PY, "-m", "sigma_exporter.cli", "--config.file", str(config),
                "--web.listen-address", f"127.0.0.1:{port}", "--log.level", "error"])
    started.append(exp)
    base = f"http://127.0.0.1:{port}"
    def ready() -> bool:
        if exp.proc.poll() is not None:
            raise RuntimeError(f"exporter exited with {exp.proc.returncode} ({config})")
        return httpx.get(base + "/-/ready", timeout=5, trust_env=False).status_code == 200

    wait_for(ready, 120, "exporter ready")
    return exp, base


def timed_get(url: str, headers: dict[str, str], client: httpx.Client) -> tuple[float, int]:
    started = time.perf_counter()
    with client.stream("GET", url, headers=headers) as response:
        size = sum(len(c) for c in response.iter_raw())
    return time.perf_counter() - started, size


def stats(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "n": len(values)}


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


# --- scenarios ---------------------------------------------------------------------

def fetch_answers(urls: list[str]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    async def run() -> list[tuple[dict[str, Any], dict[str, Any]]]:
        gate = asyncio.Semaphore(64)
        async with httpx.AsyncClient(timeout=30, trust_env=False) as client:
            async def one(url: str) -> tuple[dict[str, Any], dict[str, Any]]:
                async with gate:
                    for attempt in range(3):  # set-up only: a reset is retried
                        try:
                            dump = await client.post(url, json=DUMP_REQUEST)
                            progress = await client.post(url, json=PROGRESS_REQUEST)
                            return dump.json(), progress.json()
                        except httpx.TransportError:
                            if attempt == 2:
                                raise
                            await asyncio.sleep(0.5)
                raise AssertionError("unreachable")
            return list(await asyncio.gather(*(one(u) for u in urls)))
    return asyncio.run(run())


def serving_paths(urls: list[str], repeats: int) -> dict[str, Any]:
    """Our scrape path versus stock prometheus_client on the same families."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.openmetrics.exposition import generate_latest as om_latest

    from sigma_exporter.collect.sigma import DumpSource, ProgressSource
    from sigma_exporter.config import Config, TargetConfig
    from sigma_exporter.poll.scheduler import Poller
    from sigma_exporter.source.client import Answer
    from sigma_exporter.web.exporter import Exporter

    answers = fetch_answers(urls)
    config = Config(tuple(TargetConfig(name=f"s{i:04d}", url=u) for i, u in enumerate(urls)))
    poller = Poller(config)

    class Canned:
        """The answers fetched above, handed to the real sources without I/O."""

        def __init__(self, dump: dict[str, Any], progress: dict[str, Any]) -> None:
            now = time.time()
            self.answers = {"dump": Answer(dump, now, 0.01),
                            "progress": Answer(progress, now, 0.01)}

        async def fetch(self, payload: dict[str, str], method: str = "POST") -> Answer:
            return self.answers[payload["type"]]

        async def aclose(self) -> None:
            return None

    for state, (dump, progress) in zip(poller.targets.values(), answers, strict=True):
        canned = Canned(dump, progress)
        for source in state.sources:
            if isinstance(source, DumpSource | ProgressSource):
                source.client = canned
    asyncio.run(poller.poll_all_once())
    snapshots = [[exposition.read_back(s.published.rendered)] for s in poller.targets.values()]
    ours = Exporter(poller)

    class Stock:
        """A textbook custom collector: families built from snapshots per scrape."""

        def collect(self) -> Iterator[Any]:
            merged = samples.merge(p for parts in snapshots for p in parts)
            yield from exposition.to_families(merged)

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Stock())

    ours_times, stock_times, stock_encode, stock_gzip = [], [], [], []
    body = b""
    for _ in range(repeats):
        # Worst case: a poll landed since the last scrape and nothing built its
        # body yet, so this scrape merges and compresses the whole fleet itself.
        poller.flush_published()
        ours._bodies.clear()
        started = time.perf_counter()
        body = ours.metrics_body(openmetrics=True, gzip=True)
        ours_times.append(time.perf_counter() - started)
        started = time.perf_counter()
        text = om_latest(registry)  # type: ignore[no-untyped-call]
        encoded = time.perf_counter()
        gzip.compress(text)  # prometheus_client's own handler: level 9
        done = time.perf_counter()
        stock_times.append(done - started)
        stock_encode.append(encoded - started)
        stock_gzip.append(done - encoded)
    plain = exposition.merge([s.published.rendered for s in poller.targets.values()], False)
    series = sum(1 for line in plain.splitlines() if line and not line.startswith(b"#"))
    asyncio.run(poller.stop())
    return {"ours_s": stats(ours_times), "stock_s": stats(stock_times),
            "stock_encode_s": stats(stock_encode), "stock_gzip9_s": stats(stock_gzip),
            "ratio_stock_over_ours": statistics.median(stock_times)
            / statistics.median(ours_times),
            "series": series, "body_bytes": len(plain), "gzip_bytes": len(body),
            "text_exposition": plain}


def node_exporter_compare(base: str, text_exposition: bytes, tmp: Path,
                          repeats: int) -> dict[str, Any]:
    """HTTP latency of our /metrics versus node_exporter serving the same text."""
    binary = shutil.which("prometheus-node-exporter") or shutil.which("node_exporter")
    out: dict[str, Any] = {}
    with httpx.Client(trust_env=False, timeout=30) as client:
        ours = [timed_get(base + "/metrics", OM_GZIP, client)[0] for _ in range(repeats)]
        out["ours_http_s"] = stats(ours)
        if binary is None:
            out["node_exporter"] = "not installed (apt-get install prometheus-node-exporter)"
            return out
        textdir = tmp / "textfile"
        textdir.mkdir(exist_ok=True)
        (textdir / "sigma.prom").write_bytes(text_exposition)
        port = free_port()
        with processes() as started:
            node = Proc([*OTHER_CORES, binary, "--collector.disable-defaults",
                         "--collector.textfile", f"--collector.textfile.directory={textdir}",
                         f"--web.listen-address=127.0.0.1:{port}"])
            started.append(node)
            url = f"http://127.0.0.1:{port}/metrics"
            wait_for(lambda: client.get(url).status_code == 200, 30, "node_exporter")
            theirs = [timed_get(url, OM_GZIP, client)[0] for _ in range(repeats)]
        out["node_exporter_http_s"] = stats(theirs)
        out["ratio_node_exporter_over_ours"] = (statistics.median(theirs)
                                                / statistics.median(ours))
    return out


STATIC_SERVER = """
import http.server, sys
body, ctype = open(sys.argv[2], "rb").read(), sys.argv[3]
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""


def prometheus_floor(openmetrics: bytes, content_type: str, tmp: Path, scrapes: int,
                     interval: float) -> dict[str, Any]:
    """Our exact answer (OpenMetrics, gzip 1) from a server that does no work.

    scrape_duration_seconds covers Prometheus' gunzip, parsing and storing of
    every sample too, not only the exporter's answer; a server that only
    writes the same precomputed bytes shows Prometheus' own share.
    """
    body = tmp / "floor.om.gz"
    body.write_bytes(gzip.compress(openmetrics, 1))
    port = free_port()
    with processes() as started:
        server = Proc([*OTHER_CORES, PY, "-c", STATIC_SERVER, str(port), str(body),
                       content_type])
        started.append(server)
        wait_for(lambda: httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30,
                                   trust_env=False).status_code == 200, 30, "static server")
        return prometheus_scrape(f"http://127.0.0.1:{port}", tmp / "floor", scrapes, interval)


def prometheus_scrape(base: str, tmp: Path, scrapes: int, interval: float) -> dict[str, Any]:
    """Prometheus' own scrape_duration_seconds for scrapes of our /metrics."""
    tmp.mkdir(exist_ok=True)
    binary = shutil.which("prometheus")
    if binary is None:
        return {"prometheus": "not installed"}
    port = free_port()
    data = tmp / "prom-data"
    config = tmp / "prometheus.yml"
    host = base.removeprefix("http://")
    config.write_text(
        f"global:\n  scrape_interval: {int(interval)}s\n"
        f"  scrape_timeout: {max(1, int(interval) - 1)}s\n"
        "scrape_configs:\n  - job_name: sigma\n"
        f"    static_configs:\n      - targets: ['{host}']\n")
    with processes() as started:
        prom = Proc([*OTHER_CORES, binary, f"--config.file={config}",
                     f"--storage.tsdb.path={data}", f"--web.listen-address=127.0.0.1:{port}"])
        started.append(prom)
        api = f"http://127.0.0.1:{port}/api/v1/query"

        def durations() -> list[float] | None:
            window = f"{int(interval * (scrapes + 4))}s"
            response = httpx.get(api, params={"query": f"scrape_duration_seconds[{window}]"},
                                 timeout=10, trust_env=False)
            if response.status_code != 200:  # 503 in plain text until Prometheus is ready
                return None
            result = response.json()["data"]["result"]
            if not result:
                return None
            values = [float(v) for _, v in result[0]["values"]]
            return values if len(values) > scrapes else None

        values = wait_for(durations, interval * (scrapes + 10) + 60, "prometheus scrapes")
        sample_count = httpx.get(api, params={"query": "scrape_samples_scraped"}, timeout=10,
                                 trust_env=False).json()["data"]["result"][0]["value"][1]
    # The first scrape creates every series (several times slower): reported
    # apart, the steady state is what every later scrape costs.
    return {"scrape_duration_s": stats(values[1:][-scrapes:]), "first_scrape_s": values[0],
            "samples": int(sample_count)}


def polling(exp: Proc, rounds: int, interval: float, base: str) -> dict[str, Any]:
    """Exporter CPU per round and the wall spread of one round's completions."""
    time.sleep(interval * 1.5)  # past start-up and the first round
    cpu0, t0 = exp.cpu_seconds(), time.monotonic()
    time.sleep(interval * rounds)
    cpu = exp.cpu_seconds() - cpu0
    elapsed = time.monotonic() - t0
    body = httpx.get(base + "/metrics", timeout=30, trust_env=False).text
    stamps = [float(line.rsplit(" ", 1)[1]) for line in body.splitlines()
              if line.startswith("sigma_last_poll_success_timestamp_seconds{")]
    durations = [float(line.rsplit(" ", 1)[1]) for line in body.splitlines()
                 if line.startswith("sigma_poll_duration_seconds{")]
    return {"cpu_per_round_s": cpu / (elapsed / interval), "rss_bytes": exp.rss_bytes(),
            "round_spread_s": (max(stamps) - min(stamps)) if stamps else None,
            "poll_duration_max_s": max(durations) if durations else None,
            "targets_up": sum(1 for line in body.splitlines()
                              if line.startswith("sigma_up{") and line.endswith(" 1"))}


def aiohttp_floor(urls: list[str], repeats: int) -> dict[str, Any]:
    """CPU of a bare aiohttp loop fetching the same 2 requests per server."""
    code = f"""
import asyncio, time, aiohttp, json
urls = {json.dumps(urls)}
async def main():
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn) as s:
        async def one(u):
            for body in ({json.dumps(DUMP_REQUEST)!r}, {json.dumps(PROGRESS_REQUEST)!r}):
                async with s.post(u, data=body) as r:
                    json.loads(await r.read())
        await asyncio.gather(*(one(u) for u in urls))  # warm the connections
        cpu = []
        for _ in range({repeats}):
            t = time.process_time()
            await asyncio.gather(*(one(u) for u in urls))
            cpu.append(time.process_time() - t)
        print(json.dumps(cpu))
asyncio.run(main())
"""
    result = subprocess.run([*EXPORTER_CORE, PY, "-c", code], capture_output=True, text=True,
                            timeout=600, check=True)
    return {"cpu_per_round_s": stats(json.loads(result.stdout))}


def isolation(started: list[Proc], tmp: Path, urls: list[str], hanging: list[str],
              interval: float, scrapes: int) -> dict[str, Any]:
    """Scrape latency with and without hanging targets; staleness of the healthy ones.

    As the goal reads: all targets healthy, then the same number of targets
    with `len(hanging)` of them hanging until their timeout. Scrapes are paced
    evenly over two intervals, so they sample the poll rounds (and the burst of
    timeouts) instead of the quiet time between them.
    """
    out: dict[str, Any] = {}
    healthy = urls[: len(urls) - len(hanging)]
    for label, targets in (("without_hangs", urls), ("with_hangs", healthy + hanging)):
        exp, base = exporter(started, tmp, targets, interval)
        time.sleep(interval)
        latencies, offsets, worst_age = [], [], 0.0
        names = {f"s{i:04d}" for i in range(len(healthy))}
        period = interval * 2 / scrapes
        with httpx.Client(trust_env=False, timeout=30) as client:
            start = time.monotonic()
            for n in range(scrapes):
                time.sleep(max(0.0, start + n * period - time.monotonic()))
                offsets.append(time.monotonic() - start)
                latencies.append(timed_get(base + "/metrics", OM_GZIP, client)[0])
                if n % 10:  # the age check reads 9 MB of text: not every time
                    continue
                body = client.get(base + "/metrics").text
                now = time.time()
                for line in body.splitlines():
                    if line.startswith("sigma_last_poll_success_timestamp_seconds{"):
                        name = line.split('"')[1]
                        if name in names:
                            worst_age = max(worst_age, now - float(line.rsplit(" ", 1)[1]))
        slowest = sorted(zip(latencies, offsets, strict=True), reverse=True)[:5]
        out[label] = {"targets": len(targets), "scrape_s": stats(latencies),
                      "scrape_p99_s": p99(latencies), "healthy_worst_age_s": worst_age,
                      "slowest_ms_at_s": [(round(v * 1000, 1), round(t, 2)) for v, t in slowest]}
        exp.stop()
        started.remove(exp)
    out["p99_ratio"] = out["with_hangs"]["scrape_p99_s"] / out["without_hangs"]["scrape_p99_s"]
    return out


def freshness(base: str, control: str, interval: float, tries: int) -> dict[str, Any]:
    """Delay from a change in a simulated server to the change in /metrics."""
    delays = []
    with httpx.Client(trust_env=False, timeout=10) as client:
        for i in range(tries):
            speed = f"0.{51 + i}"
            client.post(f"{control}/servers/0/jobs/VTV3", params={"speed": speed})
            started = time.monotonic()
            needle = f'sigma_job_speed{{target="s0000",job_name="VTV3"}} {speed}'
            def visible(needle: str = needle) -> bool:
                return needle in client.get(base + "/metrics").text

            wait_for(visible, interval * 3, "change visible")
            delays.append(time.monotonic() - started)
    return {"delay_s": stats(delays)}


def agent_mode(seconds: float, interval: float) -> dict[str, Any]:
    """CPU of one local target plus NVML (fake backend) at the default interval."""
    code = f"""
import asyncio, json, time, resource
from sigma_exporter.agent.source import nvml_source
from sigma_exporter.config import Config, NvmlConfig, TargetConfig
from sigma_exporter.sim.fake_nvml import FakeBackend
from sigma_exporter.sim.scenario import parse_scenario, TimeClock
from sigma_exporter.sim.http_server import Simulator
from sigma_exporter.sim.model import make_servers
from sigma_exporter.app import Settings, serve

scenario = parse_scenario({{"gpus": {{"gpu0": {{"name": "NVIDIA A10", "total_mib": 22731}}}},
    "rounds": [{{"gpu0": {{"used_mib": 4096, "gpu": 40, "mem": 12, "enc": 55, "dec": 20,
                "temp": 50, "sessions": 4, "power_w": 90, "video_mhz": 1410}}}}]}})

async def main():
    sim = Simulator(make_servers(1), listen_host="127.0.0.1", first_port=0)
    await sim.start()
    config = Config((TargetConfig(name="local", url=sim.url(0), interval={interval},
                                  timeout={min(5.0, interval / 2)}),),
                    NvmlConfig(enabled="true", target="local"))
    nvml = nvml_source(config, FakeBackend(scenario, TimeClock(time.time(), 15.0)))
    task = asyncio.create_task(serve(Settings(config, ("127.0.0.1:{free_port()}",)),
                                     [nvml.factory]))
    await asyncio.sleep({interval} + 1)
    if task.done():
        raise SystemExit(f"exporter failed: {{task.exception()}}")
    t, c = time.monotonic(), time.process_time()
    await asyncio.sleep({seconds})
    print(json.dumps({{"cpu_s": time.process_time() - c, "wall_s": time.monotonic() - t}}))
    task.cancel()
    await sim.stop()
asyncio.run(main())
"""
    result = subprocess.run([*EXPORTER_CORE, PY, "-c", code], capture_output=True, text=True,
                            timeout=seconds + interval + 120, check=False, cwd=ROOT)
    if result.returncode != 0 and not result.stdout.strip():
        return {"error": result.stderr[-2000:]}
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    # The simulator runs in the same process here, so this is an upper bound.
    return {"cpu_core_percent": 100 * figures["cpu_s"] / figures["wall_s"], **figures,
            "note": "upper bound: the simulated server runs in the same process"}


# --- the run -----------------------------------------------------------------------

def poll_only(args: argparse.Namespace) -> dict[str, Any]:
    """Poll CPU per round and the bare aiohttp floor, in one run: the poll path's
    before and after without the other scenarios (minutes instead of 15)."""
    # --tiny: seconds, so CI runs it (tests/ops/test_bench.py).
    size, interval = (20, 1.0) if args.tiny else (args.targets, 15.0)
    rounds, repeats = (2, 2) if args.tiny else (args.rounds, 5)
    results: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform(), "pinned": bool(EXPORTER_CORE)},
        "size": size, "interval_s": interval, "poll_only": True, "tiny": args.tiny,
    }
    with tempfile.TemporaryDirectory() as tmpdir, processes() as started:
        first = port_block(size)
        simulator(started, size, first)
        urls = [f"http://127.0.0.1:{first + i}" for i in range(size)]
        results["polling"], _, _ = poll_cost(started, Path(tmpdir), urls, interval,
                                             rounds, repeats)
    return results


def poll_cost(started: list[Proc], tmp: Path, urls: list[str], interval: float,
              rounds: int, repeats: int) -> tuple[dict[str, Any], Proc, str]:
    """The bare aiohttp floor, then an exporter started on `urls` and its poll CPU per
    round over `rounds`, with their ratio; and the exporter and its base URL.

    The floor first, with no exporter polling the same simulator on the same
    core: measured beside one, its figure moved by half from run to run.
    """
    log("bare aiohttp ...")
    floor = aiohttp_floor(urls, repeats)
    log("exporter with all targets ...")
    exp, base = exporter(started, tmp, urls, interval)
    log("polling ...")
    polled = polling(exp, rounds, interval, base)
    polled["aiohttp_floor"] = floor
    polled["ratio_over_aiohttp"] = (polled["cpu_per_round_s"]
                                    / floor["cpu_per_round_s"]["median"])
    return polled, exp, base


def run(args: argparse.Namespace) -> dict[str, Any]:
    tiny = args.tiny
    size = 20 if tiny else args.targets
    interval = 1.0 if tiny else 15.0  # tiny: every stage runs, in as few seconds
    repeats = 3 if tiny else 10
    results: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform(), "pinned": bool(EXPORTER_CORE)},
        "size": size, "interval_s": interval, "tiny": tiny,
    }
    with tempfile.TemporaryDirectory() as tmpdir, processes() as started:
        tmp = Path(tmpdir)
        first = port_block(size + 1)
        control = free_port()
        simulator(started, size, first, "--control", f"127.0.0.1:{control}")
        urls = [f"http://127.0.0.1:{first + i}" for i in range(size)]
        log("serving path (in-process) ...")
        serving = serving_paths(urls, repeats)
        text_exposition = serving.pop("text_exposition")
        results["serving"] = serving
        results["polling"], exp, base = poll_cost(started, tmp, urls, interval,
                                                  2 if tiny else 4, 2 if tiny else 5)
        log("node_exporter ...")
        results["node_exporter"] = node_exporter_compare(base, text_exposition, tmp, repeats)
        log("prometheus scrape ...")
        results["prometheus"] = prometheus_scrape(base, tmp, 3 if tiny else 16,
                                                  1.0 if tiny else 5.0)
        log("prometheus scraping the same answer from a zero-work server ...")
        answer = httpx.get(base + "/metrics", headers={"Accept": OM_GZIP["Accept"]},
                           timeout=30, trust_env=False)
        results["prometheus_floor"] = prometheus_floor(
            answer.content, answer.headers["content-type"], tmp, 3 if tiny else 16,
            1.0 if tiny else 5.0)
        log("freshness ...")
        results["freshness"] = freshness(base.replace("/metrics", ""),
                                         f"http://127.0.0.1:{control}", interval,
                                         2 if tiny else 5)
        exp.stop()
        started.remove(exp)
        log("memory with one target ...")
        one, _ = exporter(started, tmp, urls[:1], interval)
        time.sleep(interval * 2)
        results["memory"] = {"rss_one_target_bytes": one.rss_bytes(),
                             f"rss_{size}_targets_bytes": results["polling"]["rss_bytes"]}
        one.stop()
        started.remove(one)
        log("isolation (hanging targets) ...")
        hang_count = max(2, size // 10)
        hang_first = port_block(hang_count)
        simulator(started, hang_count, hang_first, "--fault", "slow")
        hanging = [f"http://127.0.0.1:{hang_first + i}" for i in range(hang_count)]
        results["isolation"] = isolation(started, tmp, urls, hanging,
                                         interval, 10 if tiny else 300)
    log("agent mode ...")
    results["agent"] = agent_mode(3 if tiny else 120, interval)
    if not tiny and args.scaling:
        results["scaling"] = scaling(args.scaling)
    if not tiny and args.capacity:
        results["capacity"] = capacity(results.get("scaling") or scaling([1000, 2000]))
    return results


# A 15 s round on one core: the poll CPU of a round plus the scrapes Prometheus makes
# meanwhile (one every 15 s) must fit with a fifth of the core to spare (GC, TLS,
# reloads, a scraper or two more).
ROUND_S = 15.0
CORE_SHARE = 0.8
FLEET = 10_000


def capacity(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The largest fleet one exporter holds on one core at 15 s (fitted from `rows`,
    then measured at that size when this machine can simulate it), and the
    10,000-target fleet split with deploy/prometheus/shard.py."""
    out = capacity_from(rows)
    largest = out["largest_targets"]
    if largest <= 4000:  # one simulator core serves that many here
        log(f"capacity: measuring {largest} targets ...")
        measured = scaling([largest])[0]
        out["measured"] = measured
        out["measured_core_share"] = ((measured["poll_cpu_per_round_s"] + measured["scrape_s"])
                                      / ROUND_S)
    else:
        out["measured"] = None  # computed only: say so where it is reported
    return out


def capacity_from(rows: list[dict[str, Any]], fleet: int = FLEET) -> dict[str, Any]:
    """The fit and the shards, from measured rows (targets, poll CPU per round,
    scrape CPU): pure arithmetic, so a test can check it."""
    sizes = [r["targets"] for r in rows]
    cost = [r["poll_cpu_per_round_s"] + r["scrape_s"] for r in rows]
    n = len(rows)
    mean_x, mean_y = sum(sizes) / n, sum(cost) / n
    var = sum((x - mean_x) ** 2 for x in sizes)
    # Least squares line through (targets, CPU per round with one scrape).
    per_target = (sum((x - mean_x) * (y - mean_y) for x, y in zip(sizes, cost, strict=True))
                  / var) if var else mean_y / mean_x
    fixed = mean_y - per_target * mean_x
    largest = int((ROUND_S * CORE_SHARE - fixed) / per_target)
    spec = importlib.util.spec_from_file_location(
        "sigma_shard", ROOT / "deploy" / "prometheus" / "shard.py")
    assert spec is not None and spec.loader is not None
    shard = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(shard)
    shards = max(1, -(-fleet // largest))
    while True:
        counts = [0] * shards
        for i in range(fleet):
            counts[shard.hashmod(f"s{i:05d}", shards)] += 1
        if max(counts) <= largest:
            break
        shards += 1  # hashmod is uneven: one more replica until the largest shard fits
    return {"per_target_cpu_s": per_target, "fixed_cpu_s": fixed, "fit_from_targets": sizes,
            "largest_targets": largest,
            "fleet": {"targets": fleet, "shards": shards, "largest_shard": max(counts),
                      "smallest_shard": min(counts),
                      "cpu_per_round_s_largest_shard": fixed + per_target * max(counts),
                      "how": "computed from the measured per-target cost; each shard is "
                             "one exporter on one core"}}


def scaling(sizes: list[int]) -> list[dict[str, Any]]:
    """Scrape path and poll CPU against target count."""
    rows = []
    for size in sizes:
        log(f"scaling {size} ...")
        with tempfile.TemporaryDirectory() as tmpdir, processes() as started:
            first = port_block(size)
            simulator(started, size, first)
            urls = [f"http://127.0.0.1:{first + i}" for i in range(size)]
            serving = serving_paths(urls, 5)
            serving.pop("text_exposition")
            exp, base = exporter(started, Path(tmpdir), urls, 15.0)
            poll = polling(exp, 2, 15.0, base)
            rows.append({"targets": size, "series": serving["series"],
                         "scrape_s": serving["ours_s"]["median"],
                         "stock_scrape_s": serving["stock_s"]["median"],
                         "poll_cpu_per_round_s": poll["cpu_per_round_s"],
                         "rss_bytes": poll["rss_bytes"]})
    return rows


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def table(results: dict[str, Any]) -> str:
    rows: list[tuple[str, str, str, str]] = []

    def add(name: str, figure: Any, goal: str = "") -> None:
        if isinstance(figure, dict) and "median" in figure:
            rows.append((name, f"{figure['median']:.4g}", f"{figure['min']:.4g} .. "
                         f"{figure['max']:.4g}", goal))
        elif isinstance(figure, float | int):
            rows.append((name, f"{figure:.4g}", "", goal))
        else:
            rows.append((name, str(figure), "", goal))

    s, p, n = results["serving"], results["polling"], results["node_exporter"]
    add("series", s["series"])
    add("serving path, ours (s)", s["ours_s"])
    add("serving path, stock prometheus_client + gzip 9 (s)", s["stock_s"])
    add("ratio stock / ours", s["ratio_stock_over_ours"], ">= 10")
    add("HTTP /metrics OM+gzip, ours (s)", n["ours_http_s"])
    if "node_exporter_http_s" in n:
        add("HTTP, node_exporter textfile (s)", n["node_exporter_http_s"])
        add("ratio node_exporter / ours", n["ratio_node_exporter_over_ours"], ">= 4")
    prom = results["prometheus"]
    if "scrape_duration_s" in prom:
        add("Prometheus scrape_duration_seconds (s)", prom["scrape_duration_s"], "<= 0.150")
    floor = results.get("prometheus_floor", {})
    if "scrape_duration_s" in floor:
        add("  same answer from a zero-work server (s)", floor["scrape_duration_s"])
    add("poll CPU per round (s)", p["cpu_per_round_s"], "<= 1.5")
    add("bare aiohttp CPU per round (s)", p["aiohttp_floor"]["cpu_per_round_s"])
    add("ratio ours / aiohttp", p["ratio_over_aiohttp"], "<= 5")
    add("round spread of completions (s)", p["round_spread_s"] or 0.0, "<= 2")
    mem = results["memory"]
    for key, value in mem.items():
        add(key.replace("_bytes", " (MB)"), value / 1e6,
            "<= 60" if "one" in key else "<= 150")
    iso = results["isolation"]
    add("scrape p99 without hangs (s)", iso["without_hangs"]["scrape_p99_s"])
    add("scrape p99 with hangs (s)", iso["with_hangs"]["scrape_p99_s"])
    add("p99 ratio with/without", iso["p99_ratio"], "<= 1.10")
    add("healthy worst age with hangs (s)", iso["with_hangs"]["healthy_worst_age_s"],
        f"<= {results['interval_s'] + 2:g}")
    agent = results["agent"]
    add("agent mode CPU (% of a core)", agent.get("cpu_core_percent", agent.get("error")),
        "<= 0.5")
    add("freshness delay (s)", results["freshness"]["delay_s"],
        f"<= {results['interval_s'] + 1:g}")
    width = max(len(r[0]) for r in rows)
    lines = [f"{'figure'.ljust(width)}  {'median':>10}  {'min .. max':>22}  goal"]
    lines += [f"{a.ljust(width)}  {b:>10}  {c:>22}  {d}" for a, b, c, d in rows]
    return "\n".join(lines)


def poll_table(results: dict[str, Any]) -> str:
    p = results["polling"]
    floor = p["aiohttp_floor"]["cpu_per_round_s"]
    return "\n".join([
        f"targets up                      {p['targets_up']} of {results['size']}",
        f"poll CPU per round (s)          {p['cpu_per_round_s']:.3f}",
        f"bare aiohttp CPU per round (s)  {floor['median']:.3f} "
        f"({floor['min']:.3f} .. {floor['max']:.3f})",
        f"ratio ours / aiohttp            {p['ratio_over_aiohttp']:.2f}  (goal <= 1.5)",
        f"round spread of completions (s) {p['round_spread_s'] or 0.0:.2f}  (goal <= 2)",
        f"slowest poll (s)                {p['poll_duration_max_s'] or 0.0:.3f}",
        f"RSS (MB)                        {p['rss_bytes'] / 1e6:.0f}"])


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = [r["series"] for r in rows]
    fig, left = plt.subplots(figsize=(7, 4))
    left.plot(series, [r["scrape_s"] * 1000 for r in rows], "o-", label="scrape path, ours")
    left.plot(series, [r["stock_scrape_s"] * 1000 for r in rows], "s--",
              label="stock prometheus_client + gzip 9")
    left.set_xlabel("series")
    left.set_ylabel("milliseconds per scrape")
    right = left.twinx()
    right.plot(series, [r["poll_cpu_per_round_s"] for r in rows], "^-", color="tab:green",
               label="poll CPU per round (s)")
    right.set_ylabel("CPU seconds per poll round")
    handles = left.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
    left.legend(handles, [str(h.get_label()) for h in handles], loc="upper left")
    left.set_title(", ".join(f"{r['targets']} targets" for r in rows))
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="seconds-long run (CI)")
    parser.add_argument("--capacity", action="store_true",
                        help="the largest fleet one exporter holds on one core at 15 s, "
                             "and the 10,000-target fleet sharded (after --scaling)")
    parser.add_argument("--poll-only", action="store_true",
                        help="only the poll CPU per round and the bare aiohttp floor")
    parser.add_argument("--rounds", type=int, default=6,
                        help="--poll-only: 15 s rounds the poll CPU is averaged over")
    parser.add_argument("--targets", type=int, default=1000)
    parser.add_argument("--scaling", type=lambda s: [int(x) for x in s.split(",") if x.strip()]
                        if s != "none" else [],
                        default=[100, 300, 1000, 3000], help="target counts, comma-separated")
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    results = poll_only(args) if args.poll_only else run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    name = (("tiny-poll" if args.tiny else f"{stamp}-poll") if args.poll_only
            else "tiny" if args.tiny else stamp)
    (args.out / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
    if results.get("scaling") and not args.no_plot:
        plot(results["scaling"], args.out / f"{name}-scaling.png")
    print(poll_table(results) if args.poll_only else table(results))
    print(f"\nraw figures: {args.out / (name + '.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
