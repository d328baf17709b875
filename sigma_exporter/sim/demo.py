"""`sigma-exporter demo`: simulated Sigma servers plus the exporter, one command.

Three simulated servers named as a fleet would be (`sigma-01` .. `sigma-03`,
the third without a GPU) on free loopback ports, an exporter watching them
and, with `--with-prometheus`, a real Prometheus on loopback scraping it with
the shipped alert rules. The URLs and the next steps are printed; Ctrl-C
stops everything the demo started.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from sigma_exporter import logsetup
from sigma_exporter.app import Settings, duration_flag, serve
from sigma_exporter.config import (
    Config,
    ConfigError,
    OutputRoot,
    OutputsConfig,
    TargetConfig,
    format_duration,
)
from sigma_exporter.sim.http_server import Simulator
from sigma_exporter.sim.simulator import run_simulator
from sigma_exporter.web.server import DEFAULT_LISTEN, describe_listen, listen_problem

DEMO_SERVERS = 3
# The shipped rules, when the demo runs from a checkout (scripts/demo).
RULES_DIR = Path(__file__).resolve().parents[2] / "alerts"  # sigma_exporter/sim/ -> root
RULE_FILES = ("sigma-recording.yml", "sigma-alerts.yml")


def free_consecutive_ports(count: int, host: str = "127.0.0.1") -> int:
    """The first of `count` consecutive ports that are free right now."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind((host, 0))
            first: int = probe.getsockname()[1]
        if first + count > 65535:
            continue
        sockets = []
        try:
            for offset in range(count):
                s = socket.socket()
                sockets.append(s)
                s.bind((host, first + offset))
            return first
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise OSError("no free consecutive ports on loopback")


def demo_config(first_port: int, interval: float, outputs_dir: str | None = None) -> Config:
    """The demo's targets; with `outputs_dir`, each target's HLS outputs read there
    (the simulator writes `outputs_dir/<server>/<job>/`), as agent mode reads them."""
    targets = tuple(
        TargetConfig(name=f"sigma-{i + 1:02d}", url=f"http://127.0.0.1:{first_port + i}",
                     interval=interval, timeout=min(5.0, interval))
        for i in range(DEMO_SERVERS))
    outputs = OutputsConfig()
    if outputs_dir is not None:
        outputs = OutputsConfig(roots=tuple(
            OutputRoot(str(Path(outputs_dir) / t.name), target=t.name) for t in targets))
    return Config(targets, source="demo", outputs=outputs)


def freeze_playlist(sim: Simulator, server: int = 0, job: str = "VTV3") -> str:
    """The demo's "a playlist frozen" incident: the packager of `job` stops writing
    while Sigma still says the job runs. Returns what to watch for.

    A hook for the demo's incident table (issue 26); `None` heals it:
    `sim.set_job_output(server, job, None)`.
    """
    sim.set_job_output(server, job, "frozen")
    return (f"{sim.servers[server].name} {job}: its playlists stop changing; "
            "SigmaOutputStale pages within 2 minutes, the status page lists it first")


@contextlib.contextmanager
def prometheus(exporter: str, interval: float) -> Iterator[str]:
    """A real Prometheus on loopback scraping `exporter` (HOST:PORT) with the
    shipped rules; yields its URL and stops it (and only it) on the way out."""
    binary = shutil.which("prometheus")
    if binary is None:
        raise ConfigError("--with-prometheus", "prometheus", "not found on PATH",
                          "install Prometheus (Debian/Ubuntu: apt-get install prometheus), "
                          "or run the demo without --with-prometheus")
    every = format_duration(interval)
    rules = [RULES_DIR / name for name in RULE_FILES if (RULES_DIR / name).is_file()]
    with tempfile.TemporaryDirectory(prefix="sigma-demo-prometheus-") as home:
        config = Path(home) / "prometheus.yml"
        # The scrape job as the README shows it: named sigma, no honor_labels.
        config.write_text(
            f"global:\n  scrape_interval: {every}\n  evaluation_interval: {every}\n"
            "rule_files:\n" + "".join(f"  - {path}\n" for path in rules)
            + "scrape_configs:\n  - job_name: sigma\n"
            f"    static_configs:\n      - targets: ['{exporter}']\n")
        port = free_consecutive_ports(1)
        proc = subprocess.Popen(  # noqa: S603 - the binary found on PATH, fixed arguments
            [binary, f"--config.file={config}", f"--storage.tsdb.path={Path(home) / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            yield f"http://127.0.0.1:{port}/"
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _print_urls(base: str, urls: list[str], prom_url: str | None, listen: str) -> None:
    print("sigma-exporter demo: 3 simulated Sigma servers (sigma-03 has no GPU), "
          "their channels writing real HLS")
    for i, url in enumerate(urls):
        print(f"  simulated sigma-{i + 1:02d}  {url}/")
    print(f"  status page        {base}")
    print(f"  metrics            {base}metrics")
    print(f"  one target         {base}probe?target=sigma-01")
    if prom_url is not None:
        print(f"  Prometheus         {prom_url}  (alerts: {prom_url}alerts)")
    address = listen.replace("0.0.0.0", "127.0.0.1")  # noqa: S104 - shown, not bound
    print("Next:")
    print(f"  1. scrape it: in prometheus.yml, `- job_name: sigma` with "
          f"`static_configs: [{{targets: ['{address}']}}]` (README: From the demo)")
    print("  2. load alerts/sigma-*.yml as rule_files and import grafana/dashboards/*.json")
    print("  3. or everything at once: `docker compose up --build` in deploy/docker")
    print("Press Ctrl-C to stop.", flush=True)


async def _demo(listen: str, interval: float, with_prometheus: bool) -> None:
    with tempfile.TemporaryDirectory(prefix="sigma-demo-outputs-") as outputs_dir:
        await _demo_in(listen, interval, with_prometheus, outputs_dir)


async def _demo_in(listen: str, interval: float, with_prometheus: bool,
                   outputs_dir: str) -> None:
    first = free_consecutive_ports(DEMO_SERVERS)
    stop_sim = asyncio.Event()
    sim = asyncio.create_task(run_simulator(
        "127.0.0.1", first, DEMO_SERVERS, gpus=1, seed=1, fault=None, control_port=None,
        jobs=4, static=False, stop=stop_sim, out=io.StringIO(), name_prefix="sigma",
        outputs_dir=outputs_dir))
    config = demo_config(first, interval, outputs_dir)
    ready = asyncio.Event()
    exporter = asyncio.create_task(serve(Settings(config, (listen,)), ready=ready))
    waiter = asyncio.create_task(ready.wait())
    await asyncio.wait({exporter, waiter}, return_when=asyncio.FIRST_COMPLETED)
    try:
        if exporter.done():  # failed to start (port taken): report it
            waiter.cancel()
            exporter.result()
            return
        base = describe_listen(listen)
        urls = [t.url for t in config.targets]
        with contextlib.ExitStack() as stack:
            prom_url = None
            if with_prometheus:
                address = base.removeprefix("http://").rstrip("/")
                prom_url = stack.enter_context(prometheus(address, interval))
            _print_urls(base, urls, prom_url, listen)
            await exporter
    finally:
        stop_sim.set()
        with contextlib.suppress(asyncio.CancelledError):
            await sim


def main_demo(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="sigma-exporter demo",
        description="Run three simulated Sigma servers and the exporter (and, with "
                    "--with-prometheus, a Prometheus with the shipped rules) on loopback.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    default_listen = (DEFAULT_LISTEN.replace(":", "127.0.0.1:", 1)
                      if DEFAULT_LISTEN.startswith(":") else DEFAULT_LISTEN)
    parser.add_argument("--web.listen-address", default=default_listen,
                        help="where the exporter listens")
    parser.add_argument("--interval", default="5s",
                        help="poll interval, a Prometheus duration (5s, 1m)")
    parser.add_argument("--with-prometheus", action="store_true",
                        help="also run the `prometheus` found on PATH on loopback, scraping "
                             "the exporter with the shipped alert rules")
    parser.add_argument("--log.level", default="warn", help="info shows every poll round")
    args = parser.parse_args(argv)
    logsetup.setup(getattr(args, "log.level"))
    listen = getattr(args, "web.listen_address")
    try:
        interval = duration_flag("--interval", args.interval)
        asyncio.run(_demo(listen, interval, args.with_prometheus))
    except ConfigError as exc:
        print(f"sigma-exporter demo: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"sigma-exporter demo: cannot start: {listen_problem(listen, exc)}",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0
