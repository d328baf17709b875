"""`sigma-exporter demo`: simulated Sigma servers plus the exporter, one command.

Three simulated servers named as a fleet would be (`sigma-01` .. `sigma-03`,
the third without a GPU) on free loopback ports, an exporter watching them
and, with `--with-prometheus`, a real Prometheus on loopback scraping it with
the shipped alert rules. `--incident NAME` replays an incident after a
healthy start (`INCIDENTS`: a server down, a channel stalled), so an
operator sees the status page, the dashboards and an alert react. The URLs
and the next steps are printed; Ctrl-C stops everything the demo started.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from sigma_exporter import logsetup
from sigma_exporter.app import Settings, serve
from sigma_exporter.config import (
    Config,
    ConfigError,
    OutputRoot,
    OutputsConfig,
    TargetConfig,
    duration_flag,
    format_duration,
)
from sigma_exporter.grammar import parse_duration
from sigma_exporter.helptext import HelpFormatter
from sigma_exporter.sim.http_server import Simulator
from sigma_exporter.sim.model import make_servers
from sigma_exporter.web.server import DEFAULT_LISTEN, describe_listen, listen_problem

DEMO_SERVERS = 3
# The shipped rules, when the demo runs from a checkout (scripts/demo).
RULES_DIR = Path(__file__).resolve().parents[2] / "alerts"  # sigma_exporter/sim/ -> root
RULE_FILES = ("sigma-recording.yml", "sigma-alerts.yml")
DEFAULT_INCIDENT_AFTER = "1m"  # healthy data first, so graphs and alerts show the change


@dataclass(frozen=True, slots=True)
class Incident:
    """One outage the demo can replay: what happens, what to watch, how to cause it."""

    name: str
    what: str  # what goes wrong, as the operator would hear of it
    watch: str  # where it shows and when (the alert's `for` included)
    start: Callable[[Simulator], Awaitable[None]]


async def _server_down(sim: Simulator) -> None:
    await sim.set_fault(1, "refuse")  # sigma-02 closes its port


async def _channel_stalled(sim: Simulator) -> None:
    sim.set_job_frozen(0, "VTV1", True)  # claims to run; its media time stops


async def _licence_lapsed(sim: Simulator) -> None:
    sim.set_license(1, "EXPIRED")  # sigma-02's licence is no longer VALID


async def _control_plane_down(sim: Simulator) -> None:
    sim.set_control_plane(1, False)  # sigma-02 loses its link to the control plane


async def _playlist_frozen(sim: Simulator) -> None:
    sim.set_job_output(0, "VTV3", "frozen")  # the packager stops; Sigma says it runs


# The incidents `--incident` replays, in the order they are listed. Each acts on
# the simulator only: the exporter, Prometheus and the page see what they would
# see of a real fleet.
INCIDENTS: dict[str, Incident] = {incident.name: incident for incident in (
    Incident("server-down", "sigma-02 stops answering (connection refused)",
             "the status page lists sigma-02 DOWN first at its next poll; SigmaServerDown "
             "fires 2 minutes later (for: 2m); the Sigma fleet dashboard shows it down",
             _server_down),
    Incident("channel-stalled", "channel VTV1 on sigma-01 claims to run, but its media time "
             "stops advancing",
             "the status page lists VTV1 as stalled within 30 s; SigmaJobStalled fires after "
             "about 3 minutes (a 2-minute rate, then for: 1m); on the Sigma jobs dashboard "
             "VTV1's media time goes flat",
             _channel_stalled),
    Incident("licence-lapsed", "sigma-02's licence lapses: the server reports EXPIRED",
             "the status page lists sigma-02 first with its licence EXPIRED at its next poll; "
             "SigmaLicenseNotValid pages after 5 minutes (for: 5m); the Sigma server "
             "dashboard shows the licence status", _licence_lapsed),
    Incident("control-plane-down", "sigma-02 loses its link to Sigma's control plane",
             "the status page says the link is down at its next poll; "
             "SigmaControlPlaneDisconnected warns after 15 minutes (for: 15m)",
             _control_plane_down),
    Incident("playlist-frozen", "channel VTV3 on sigma-01 runs as far as Sigma knows, but "
             "its HLS playlists stop changing (a stuck packager)",
             "the status page lists VTV3's stale outputs first at the next poll; "
             "SigmaOutputStale pages about a minute later (for: 1m); the Sigma jobs "
             "dashboard shows the playlists' age climb past their target duration",
             _playlist_frozen),
)}


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


def _answers(url: str) -> bool:
    """Whether `url` answers 200 (loopback, our own Prometheus; no proxy)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=2) as answer:
            return bool(answer.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def alerts_page(prometheus_url: str, wait: float = 30.0) -> str:
    """The URL of Prometheus' alerts page, once Prometheus is ready.

    Prometheus' own build serves it at /alerts; Debian's and Ubuntu's package
    (built without the React UI) at /classic/alerts only. Asked, not guessed.
    """
    deadline = time.monotonic() + wait
    while not _answers(prometheus_url + "-/ready") and time.monotonic() < deadline:
        time.sleep(0.2)
    for path in ("alerts", "classic/alerts"):
        if _answers(prometheus_url + path):
            return prometheus_url + path
    return prometheus_url + "api/v1/alerts"  # the API answers on every build


def _print_urls(base: str, urls: list[str], alerts: str | None, prom_url: str | None,
                listen: str, incidents: Sequence[Incident], starts_at: float | None,
                control: str | None) -> None:
    print("sigma-exporter demo: 3 simulated Sigma servers (sigma-03 has no GPU), "
          "their channels writing real HLS")
    for i, url in enumerate(urls):
        print(f"  simulated sigma-{i + 1:02d}  {url}/")
    print(f"  status page        {base}")
    print(f"  metrics            {base}metrics")
    print(f"  one target         {base}probe?target=sigma-01")
    if prom_url is not None:
        print(f"  Prometheus         {prom_url}  (alerts: {alerts})")
    if control is not None:
        print("Make an incident yourself on sigma-02 (the simulator's control API; "
              "status=clear, connected=1 and state=clear undo them):")
        print(f"  its licence lapses   curl -X POST '{control}/servers/1/license?status=EXPIRED'")
        print(f"  its control plane    curl -X POST "
              f"'{control}/servers/1/control-plane?connected=0'")
        print(f"  a channel stops      curl -X POST '{control}/servers/1/jobs/VTV3?state=Stop'")
    if incidents and starts_at is not None:
        when = time.strftime("%H:%M:%S", time.localtime(starts_at))
        for incident in incidents:
            print(f"Incident {incident.name} at {when}: {incident.what}.")
            print(f"  Watch: {incident.watch}.")
    for number, step in enumerate(next_steps(listen, alerts, bool(incidents)), 1):
        if number == 1:
            print("Next:")
        print(f"  {number}. {step}")
    print("Press Ctrl-C to stop.", flush=True)


def next_steps(listen: str, alerts: str | None, replaying: bool) -> list[str]:
    """What to do next, after what the demo already did."""
    address = listen.replace("0.0.0.0", "127.0.0.1")  # noqa: S104 - shown, not bound
    names = " or ".join(INCIDENTS)
    if alerts is None:  # the exporter alone
        return [f"scrape it: in prometheus.yml, `- job_name: sigma` with "
                f"`static_configs: [{{targets: ['{address}']}}]` (README: From the demo)",
                "load the rules with links to your Grafana (README step 2: alerts/links.py "
                "--out) and import grafana/dashboards/*.json",
                "see an alert fire here first: run the demo again with --with-prometheus "
                f"--incident {next(iter(INCIDENTS))} ({names})",
                "or everything at once: `docker compose up --build` in deploy/docker"]
    watch = ("watch the incident on the status page and at the alerts above" if replaying
             else f"replay an incident: run the demo again with --incident NAME ({names}) "
                  "and watch the status page and the alerts above")
    return [f"this Prometheus already scrapes the exporter with the rules: {alerts}",
            watch,
            "for your own Prometheus and Grafana: the README's \"From the demo\" steps "
            "(scrape job, rules with your links, dashboards), or `docker compose up "
            "--build` in deploy/docker"]


async def _replay(sim: Simulator, incidents: Sequence[Incident], after: float) -> None:
    await asyncio.sleep(after)
    for incident in incidents:
        await incident.start(sim)
        print(f"Incident {incident.name} started: {incident.what}.", flush=True)


async def _demo(listen: str, interval: float, with_prometheus: bool,
                incidents: Sequence[Incident] = (), incident_after: float = 60.0) -> None:
    with tempfile.TemporaryDirectory(prefix="sigma-demo-outputs-") as outputs_dir:
        await _demo_in(listen, interval, with_prometheus, incidents, incident_after,
                       outputs_dir)


async def _demo_in(listen: str, interval: float, with_prometheus: bool,
                   incidents: Sequence[Incident], incident_after: float,
                   outputs_dir: str) -> None:
    """The demo, its channels writing real HLS into `outputs_dir`, which the
    exporter reads as agent mode reads a Sigma host's folders."""
    first = free_consecutive_ports(DEMO_SERVERS)
    sim = Simulator(make_servers(DEMO_SERVERS, gpus=1, seed=1, jobs=4, name_prefix="sigma"),
                    listen_host="127.0.0.1", first_port=first, control_port=0,
                    outputs_dir=outputs_dir)
    await sim.start()
    replay: asyncio.Task[None] | None = None
    try:
        config = demo_config(first, interval, outputs_dir)
        ready = asyncio.Event()
        exporter = asyncio.create_task(serve(Settings(config, (listen,)), ready=ready))
        waiter = asyncio.create_task(ready.wait())
        await asyncio.wait({exporter, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if exporter.done():  # failed to start (port taken): report it
            waiter.cancel()
            exporter.result()
            return
        base = describe_listen(listen)
        urls = [t.url for t in config.targets]
        with contextlib.ExitStack() as stack:
            prom_url = alerts = None
            if with_prometheus:
                address = base.removeprefix("http://").rstrip("/")
                prom_url = stack.enter_context(prometheus(address, interval))
                alerts = await asyncio.to_thread(alerts_page, prom_url)
            starts_at = time.time() + incident_after if incidents else None
            if incidents:
                replay = asyncio.create_task(_replay(sim, incidents, incident_after))
            _print_urls(base, urls, alerts, prom_url, listen, incidents, starts_at,
                        sim.control_url)
            await exporter
    finally:
        if replay is not None:
            replay.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await replay
        await sim.stop()


def incident_delay(text: str) -> float:
    """--incident-after: a Prometheus duration, zero allowed."""
    try:
        return parse_duration(text)
    except ValueError:
        raise ConfigError("--incident-after", text, "not a duration",
                          "write e.g. `1m`, `30s` or `0s` (at once)") from None


def main_demo(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="sigma-exporter demo",
        description="Run three simulated Sigma servers and the exporter (and, with "
                    "--with-prometheus, a Prometheus with the shipped rules) on loopback.",
        formatter_class=HelpFormatter)
    default_listen = (DEFAULT_LISTEN.replace(":", "127.0.0.1:", 1)
                      if DEFAULT_LISTEN.startswith(":") else DEFAULT_LISTEN)
    parser.add_argument("--web.listen-address", default=default_listen,
                        help="where the exporter listens")
    parser.add_argument("--interval", default="5s",
                        help="poll interval, a Prometheus duration (5s, 1m)")
    parser.add_argument("--with-prometheus", action="store_true",
                        help="also run the `prometheus` found on PATH on loopback, scraping "
                             "the exporter with the shipped alert rules")
    parser.add_argument("--incident", action="append", default=[], choices=list(INCIDENTS),
                        help="replay an incident after a healthy start, repeatable: "
                             + "; ".join(f"{i.name}: {i.what}" for i in INCIDENTS.values()))
    parser.add_argument("--incident-after", default=DEFAULT_INCIDENT_AFTER, metavar="DURATION",
                        help="how long the fleet stays healthy before the incident (0s: at "
                             "once)")
    parser.add_argument("--log.level", default="warn", help="info shows every poll round")
    args = parser.parse_args(argv)
    logsetup.setup(getattr(args, "log.level"))
    listen = getattr(args, "web.listen_address")
    incidents = [INCIDENTS[name] for name in dict.fromkeys(args.incident)]
    try:
        interval = duration_flag("--interval", args.interval)
        after = incident_delay(args.incident_after)
        asyncio.run(_demo(listen, interval, args.with_prometheus, incidents, after))
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
