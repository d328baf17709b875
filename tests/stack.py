"""The one way a test starts the simulator and the exporter as processes.

    stack = start_stack(tmp_path, ("sim-1", "sim-2"))  # both up, every target polled
    try:
        stack.set_fault(1, "refuse")
        body = stack.metrics()
    finally:
        stack.stop()

`Simulator` and `Exporter` are the two halves, for a test that needs only one
or puts something between them (a Prometheus, a sharded config). Each runs as
a `conftest.Proc` on free loopback ports, logs to a file in the test's
directory (never to a pipe nobody reads) and is stopped by `stop()`, which is
safe to call twice. Waits poll with a deadline that only bounds a hung test.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import yaml
from conftest import Proc, free_port, free_ports, get, sigma_exporter_cmd, value, wait_until

__all__ = ["Exporter", "Simulator", "Stack", "exporter_config", "start_stack"]


def _wait(predicate: Callable[[], Any], timeout: float, what: str, proc: Proc) -> Any:
    """wait_until, with the end of the process's log in the failure message."""
    try:
        return wait_until(predicate, timeout, what)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{proc.tail()}") from None


class Simulator:
    """`sigma-exporter simulate`: `servers` Sigma servers on consecutive ports and
    its control API (faults, job speeds, queues)."""

    def __init__(self, workdir: Path, servers: int = 3, *extra: str,
                 first_port: int | None = None, log_name: str = "simulator.log") -> None:
        self.first_port = first_port or free_ports(servers)
        self.urls = [f"http://127.0.0.1:{self.first_port + i}" for i in range(servers)]
        control_port = free_port()
        self.control = f"http://127.0.0.1:{control_port}"
        self.proc = Proc(sigma_exporter_cmd(
            "simulate", "--listen", f"127.0.0.1:{self.first_port}", "--servers", str(servers),
            "--control", f"127.0.0.1:{control_port}", *extra), log=workdir / log_name)

    def post(self, path: str, **params: str) -> None:
        """POST to the control API, e.g. post("/servers/0/jobs/VTV3", speed="0.5")."""
        httpx.post(self.control + path, params=params, timeout=5,
                   trust_env=False).raise_for_status()

    def set_fault(self, index: int, mode: str) -> None:
        self.post(f"/servers/{index}/fault", mode=mode)

    def wait_ready(self, timeout: float = 30) -> None:
        _wait(lambda: all(httpx.get(url, timeout=5, trust_env=False).status_code == 200
                          for url in self.urls), timeout, f"the simulator on {self.urls[0]}...",
              self.proc)

    def stop(self) -> tuple[int, str, str]:
        return self.proc.stop()


def exporter_config(targets: Mapping[str, str], *, interval: str = "1s",
                    timeout: str = "800ms",
                    per_target: Mapping[str, Mapping[str, Any]] | None = None) -> str:
    """A config file's text: `targets` (name -> URL) with the given defaults, plus
    any keys of `per_target[name]` on that target."""
    return yaml.safe_dump({
        "defaults": {"interval": interval, "timeout": timeout},
        "targets": [{"name": name, "url": url, **(per_target or {}).get(name, {})}
                    for name, url in targets.items()],
    }, sort_keys=False)


class Exporter:
    """The exporter on a free loopback port (or `port`), reading `config`."""

    def __init__(self, config: Path, workdir: Path, *extra: str, port: int | None = None,
                 env: dict[str, str] | None = None, log_name: str = "exporter.log") -> None:
        self.port = port or free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.base = f"http://{self.address}"
        self.config = config
        self.proc = Proc(sigma_exporter_cmd("--config.file", str(config),
                                            "--web.listen-address", self.address, *extra),
                         env, log=workdir / log_name)

    def metrics(self) -> str:
        response = get(self.base + "/metrics")
        response.raise_for_status()
        return response.text

    def wait_ready(self, timeout: float = 30) -> None:
        _wait(lambda: get(self.base + "/-/ready").status_code == 200, timeout,
              f"the exporter ready on {self.address}", self.proc)

    def wait_up(self, names: Sequence[str], timeout: float = 30) -> str:
        """Wait until every target in `names` was polled whole (dump and progress);
        the body that showed it."""
        def all_up() -> str | None:
            body = self.metrics()
            return body if all(value(body, "sigma_up", target=n) == 1
                               and value(body, "sigma_progress_up", target=n) == 1
                               for n in names) else None

        body: str = _wait(all_up, timeout, f"{', '.join(names)} up", self.proc)
        return body

    def fds(self) -> int:
        """How many file descriptors the exporter holds open now."""
        return len(os.listdir(f"/proc/{self.proc.proc.pid}/fd"))

    def stop(self) -> tuple[int, str, str]:
        return self.proc.stop()


class Stack:
    """A simulator and an exporter that polls every simulated server, one target each."""

    def __init__(self, sim: Simulator, exporter: Exporter, names: Sequence[str]) -> None:
        self.sim, self.exporter, self.names = sim, exporter, tuple(names)

    @property
    def base(self) -> str:
        return self.exporter.base

    @property
    def control(self) -> str:
        return self.sim.control

    def metrics(self) -> str:
        return self.exporter.metrics()

    def set_fault(self, index: int, mode: str) -> None:
        self.sim.set_fault(index, mode)

    def stop(self) -> None:
        self.exporter.stop()
        self.sim.stop()


def start_stack(workdir: Path, names: Sequence[str], *, interval: str = "1s",
                timeout: str = "800ms",
                per_target: Mapping[str, Mapping[str, Any]] | None = None,
                sim_args: Sequence[str] = (), exporter_args: Sequence[str] = (),
                wait_up: bool = True) -> Stack:
    """The simulator with one server per name, the exporter polling them, and (with
    `wait_up`) every target polled whole once; nothing left running on failure."""
    workdir.mkdir(parents=True, exist_ok=True)
    sim = Simulator(workdir, len(names), *sim_args)
    exporter: Exporter | None = None
    try:
        config = workdir / "sigma.yml"
        config.write_text(exporter_config(dict(zip(names, sim.urls, strict=True)),
                                          interval=interval, timeout=timeout,
                                          per_target=per_target))
        exporter = Exporter(config, workdir, *exporter_args)
        if wait_up:
            exporter.wait_up(names)
        return Stack(sim, exporter, names)
    except BaseException:
        if exporter is not None:
            exporter.stop()
        sim.stop()
        raise
