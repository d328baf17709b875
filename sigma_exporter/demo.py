"""`sigma-exporter demo`: simulated Sigma servers plus the exporter, one command.

Three simulated servers (the third without a GPU) on free loopback ports and
an exporter watching them; the URLs are printed; Ctrl-C stops everything.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import socket
import sys
from collections.abc import Sequence

from . import logsetup
from .cli import DEFAULT_LISTEN, serve
from .config import ConfigError, config_from_urls
from .serve import describe_listen
from .simulator import run_simulator

DEMO_SERVERS = 3


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


async def _demo(listen: str, interval: float) -> None:
    first = free_consecutive_ports(DEMO_SERVERS)
    stop_sim = asyncio.Event()
    sim = asyncio.create_task(run_simulator(
        "127.0.0.1", first, DEMO_SERVERS, gpus=1, seed=1, fault=None, control_port=None,
        jobs=4, static=False, stop=stop_sim, out=io.StringIO()))
    urls = [f"http://127.0.0.1:{first + i}" for i in range(DEMO_SERVERS)]
    config = config_from_urls(urls, interval=interval)
    ready = asyncio.Event()
    exporter = asyncio.create_task(serve(config, listen, "/metrics", None, None, ready))
    waiter = asyncio.create_task(ready.wait())
    await asyncio.wait({exporter, waiter}, return_when=asyncio.FIRST_COMPLETED)
    if exporter.done():  # failed to start (port taken): report it
        waiter.cancel()
        stop_sim.set()
        await sim
        exporter.result()
        return
    base = describe_listen(listen)
    print("sigma-exporter demo: 3 simulated Sigma servers (the third has no GPU)")
    for url in urls:
        print(f"  simulated server   {url}/")
    print(f"  exporter           {base}")
    print(f"  metrics            {base}metrics")
    print(f"  one target         {base}probe?target=127.0.0.1:{first}")
    print("Press Ctrl-C to stop.", flush=True)
    try:
        await exporter
    finally:
        stop_sim.set()
        with contextlib.suppress(asyncio.CancelledError):
            await sim


def main_demo(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="sigma-exporter demo",
                                     description="Run simulated servers and the exporter.")
    parser.add_argument("--web.listen-address", default=DEFAULT_LISTEN.replace(":", "127.0.0.1:", 1)
                        if DEFAULT_LISTEN.startswith(":") else DEFAULT_LISTEN)
    parser.add_argument("--interval", type=float, default=5.0, help="poll interval, seconds")
    parser.add_argument("--log.level", default="warn", help="info shows every poll round")
    args = parser.parse_args(argv)
    logsetup.setup(getattr(args, "log.level"))
    try:
        asyncio.run(_demo(getattr(args, "web.listen_address"), args.interval))
    except ConfigError as exc:
        print(f"sigma-exporter demo: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"sigma-exporter demo: cannot start: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0
