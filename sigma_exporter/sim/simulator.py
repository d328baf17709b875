"""`sigma-exporter simulate`: simulated Sigma Media Servers for tests, the demo
and benchmarks.

This module is the entry point (`main_simulate` parses the flags,
`run_simulator` serves until stopped); the simulator itself is in layers:

* `model`: the servers (`SimServer`, `make_servers`) and the deterministic
  noise every answer is made of;
* `dump`, `progress`: pure rendering (`render_dump`, `render_progress`,
  `emitted_errors`): every value is a deterministic function of the server's
  configuration (seed, index, epoch, overrides) and the time asked for, so
  tests can predict what an exporter must report without sleeping;
* `faults`: the ways real servers and the proxies in front of them
  misbehave (`FAULT_MODES`);
* `http_server`: `Simulator`, N servers on consecutive ports plus a control
  API to change faults, job speeds and job states (Sigma's documented ones:
  `POST /servers/N/jobs/NAME?state=error&code=OUTPUT_TIMEOUT`, `?state=Stop`,
  `?state=clear` to let the job restart), and to freeze a job's media time
  (PTS), at run time;
* `scenario`, `gpu_override`, `fake_nvml`: scripted GPU figures, played on
  Sigma's side and as a fake NVML driver.

The answers copy the quirks of the real API on purpose (mixed key case, units
in strings, numbers as plain strings, server-local times in `progress`), so
the exporter's parser is exercised by every test that polls the simulator.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Callable
from typing import TextIO

from sigma_exporter.grammar import parse_host_port
from sigma_exporter.helptext import HelpFormatter
from sigma_exporter.sim.faults import FAULT_MODES
from sigma_exporter.sim.http_server import Simulator
from sigma_exporter.sim.model import SimServer, make_servers


async def run_simulator(
    listen_host: str,
    first_port: int,
    servers: int,
    gpus: int,
    seed: int,
    fault: str | None,
    control_port: int | None,
    jobs: int,
    static: bool,
    *,
    stop: asyncio.Event | None = None,
    out: TextIO | None = None,
    name_prefix: str = "sigma-server",
    control_host: str | None = None,
    prepare: Callable[[list[SimServer]], None] | None = None,
    outputs_dir: str | None = None,
    origin_port: int | None = None,
    ready: Callable[[Simulator], None] | None = None,
) -> None:
    """Serve `servers` simulated servers on first_port, first_port+1, ... until
    `stop` is set or the task is cancelled; every listener is closed on return.
    Prints one line per server to `out` (stdout by default) once all listen.
    `outputs_dir`: write the jobs' HLS there (and serve it on `origin_port`);
    `ready` is called with the running simulator."""
    sims = make_servers(
        servers, gpus=gpus, seed=seed, jobs=jobs, fault=fault, name_prefix=name_prefix
    )
    if prepare is not None:  # e.g. GPU figures from a scenario or local NVML
        prepare(sims)
    sim = Simulator(
        sims,
        listen_host=listen_host,
        first_port=first_port,
        control_port=control_port,
        control_host=control_host,
        static=static,
        outputs_dir=outputs_dir,
        origin_port=origin_port,
    )
    stream = out if out is not None else sys.stdout
    await sim.start()
    try:
        for i, srv in enumerate(sims):
            where = sim.url(i).rstrip("/")
            if srv.fault == "refuse":
                line = f"sigma simulator server {srv.name} refusing on {where} (fault refuse)"
            elif srv.fault:
                line = f"sigma simulator server {srv.name} listening on {where} (fault {srv.fault})"
            else:
                line = f"sigma simulator server {srv.name} listening on {where}"
            print(line, file=stream)
        if sim.control_url is not None:
            print(f"sigma simulator control API on {sim.control_url}", file=stream)
        if outputs_dir is not None:
            print(f"sigma simulator HLS outputs in {outputs_dir}", file=stream)
        if sim.origin_url is not None:
            print(f"sigma simulator origin on {sim.origin_url}", file=stream)
        stream.flush()
        if ready is not None:
            ready(sim)
        await (stop or asyncio.Event()).wait()
    finally:
        await sim.stop()


def _host_port(text: str) -> tuple[str, int]:
    try:
        host, port = parse_host_port(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT: {exc}") from None
    if host is None:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT with a host, got {text!r}")
    return host, port


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sigma-exporter simulate",
        description=(
            "Run simulated Sigma Media Servers on consecutive ports. With --servers >= 3, "
            "every server with index % 3 == 2 has no GPU."
        ),
        formatter_class=HelpFormatter,
    )
    p.add_argument(
        "--listen",
        type=_host_port,
        default="127.0.0.1:20000",
        metavar="HOST:PORT",
        help="first server's address; the others take the next ports",
    )
    p.add_argument("--servers", type=int, default=1, help="number of servers")
    p.add_argument(
        "--gpus",
        type=int,
        default=1,
        choices=range(9),
        metavar="K",
        help="GPUs per server, 0..8",
    )
    p.add_argument("--seed", type=int, default=1, help="random seed")
    p.add_argument("--fault", choices=FAULT_MODES, default=None, help="fault mode for every server")
    p.add_argument("--jobs", type=int, default=4, help="live jobs per server")
    p.add_argument(
        "--static", action="store_true", help="render once, serve the same bytes (benchmarks)"
    )
    p.add_argument(
        "--control", type=_host_port, default=None, metavar="HOST:PORT", help="control API address"
    )
    p.add_argument("--name-prefix", default="sigma-server", help="server names are PREFIX-NN")
    p.add_argument("--outputs", metavar="DIR", default=None,
                   help="write the jobs' HLS outputs (master, variants, segments) under DIR "
                        "and name those folders in progress")
    p.add_argument("--origin", type=_host_port, default=None, metavar="HOST:PORT",
                   help="serve the --outputs folder over HTTP there, as Sigma's origin app")
    gpu = p.add_mutually_exclusive_group()
    gpu.add_argument("--gpu-scenario", metavar="FILE", default=None,
                     help="GPU figures follow a scenario file (see sigma_exporter/sim/scenario.py)")
    gpu.add_argument("--gpu-mirror", action="store_true",
                     help="GPU figures read from this host's NVML (for scripts/gpu-check)")
    return p


def _gpu_source(
    scenario_file: str | None, mirror: bool
) -> Callable[[list[SimServer]], None] | None:
    """What sets the simulated GPU figures: a scenario, local NVML, or nothing."""
    if scenario_file is not None:
        from sigma_exporter.sim.gpu_override import apply_to_simulator
        from sigma_exporter.sim.scenario import ScenarioError, load_scenario

        try:
            scenario = load_scenario(scenario_file)
        except (ScenarioError, OSError) as exc:
            raise ValueError(f"--gpu-scenario {scenario_file}: {exc}") from None
        def follow(sims: list[SimServer]) -> None:
            apply_to_simulator(sims, scenario)

        return follow
    if mirror:
        from sigma_exporter.agent.nvml import NvmlFailure, PynvmlBackend
        from sigma_exporter.sim.gpu_override import apply_mirror_to_simulator

        backend = PynvmlBackend()
        try:
            backend.init()
        except NvmlFailure as exc:
            raise ValueError(f"--gpu-mirror needs NVML: {exc}") from None
        def mirror_gpus(sims: list[SimServer]) -> None:
            apply_mirror_to_simulator(sims, backend)

        return mirror_gpus
    return None


def main_simulate(args: list[str]) -> int:
    """`sigma-exporter simulate ...`: run until SIGINT/SIGTERM, then exit 0."""
    try:
        ns = _parser().parse_args(args)
    except SystemExit as exc:  # --help or a usage error: return, don't exit
        return exc.code if isinstance(exc.code, int) else 2
    host, port = ns.listen
    if ns.servers < 1 or ns.jobs < 0 or port + ns.servers - 1 > 65535:
        print("sigma-exporter simulate: bad --servers/--jobs/--listen", file=sys.stderr)
        return 2
    control_host, control_port = ns.control if ns.control is not None else (None, None)
    if ns.origin is not None and ns.outputs is None:
        print("sigma-exporter simulate: --origin needs --outputs", file=sys.stderr)
        return 2
    origin_port = ns.origin[1] if ns.origin is not None else None
    try:
        prepare = _gpu_source(ns.gpu_scenario, ns.gpu_mirror)
    except ValueError as exc:
        print(f"sigma-exporter simulate: {exc}", file=sys.stderr)
        return 2

    async def _run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await run_simulator(
                host,
                port,
                ns.servers,
                ns.gpus,
                ns.seed,
                ns.fault,
                control_port,
                ns.jobs,
                ns.static,
                stop=stop,
                name_prefix=ns.name_prefix,
                control_host=control_host,
                prepare=prepare,
                outputs_dir=ns.outputs,
                origin_port=origin_port,
            )
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    try:
        asyncio.run(_run())
    except OSError as exc:
        print(f"sigma-exporter simulate: cannot listen: {exc}", file=sys.stderr)
        return 1
    return 0
