"""Real Prometheus and Alertmanager processes on loopback, for end-to-end tests.

    prom = Prometheus(tmp_path / "prom", scrape_targets=["127.0.0.1:9877"],
                      rule_files=[...], alertmanager="127.0.0.1:9093")
    try:
        prom.wait_targets_up(1)
        prom.query("sigma_up")
    finally:
        prom.stop()

Each process gets a generated config and its own storage in a temporary
directory, listens on a free 127.0.0.1 port and logs to a file there (a
conftest.Proc with a log: no pipe a chatty process could fill and block on);
`stop()` terminates it and is safe to call twice. The simulator and the
exporter they scrape start from tests/stack.py. The binaries must be installed: a missing one
FAILS the test (conftest.require_tool), it never skips. Debian ships
Alertmanager as `prometheus-alertmanager`; either name is accepted.

Every wait polls with a deadline; the deadline only bounds a hung test, a
pass never depends on a sleep.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import yaml
from conftest import Proc, free_port, require_tool

__all__ = [
    "Alertmanager",
    "Prometheus",
    "alertmanager_binary",
    "poll",
    "prometheus_binary",
]


def prometheus_binary() -> str:
    return require_tool("prometheus")


def alertmanager_binary() -> str:
    return shutil.which("alertmanager") or require_tool("prometheus-alertmanager")


def poll(predicate: Callable[[], Any], timeout: float, what: str,
         diagnose: Callable[[], str] | None = None, step: float = 0.1) -> Any:
    """Call `predicate` until it returns something truthy; fail after `timeout` s.

    Like conftest.wait_until, plus `diagnose()` (e.g. the processes' logs) in
    the failure message, and HTTP errors tolerated while a server starts.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            result = predicate()
            if result:
                return result
            last = result
        except (httpx.HTTPError, OSError, AssertionError, KeyError) as exc:
            last = exc
        if time.monotonic() >= deadline:
            extra = "\n" + diagnose() if diagnose is not None else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; "
                                 f"last: {last!r}{extra}")
        time.sleep(step)


def _http() -> httpx.Client:
    return httpx.Client(timeout=5, trust_env=False)


class _Server:
    name = "server"

    def __init__(self, workdir: Path, port: int | None) -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.address}"
        self.client = _http()
        self.proc: Proc | None = None

    def _launch(self, args: Sequence[str]) -> None:
        self.proc = Proc(list(args), log=self.dir / f"{self.name}.log", cwd=self.dir)
        try:
            poll(self._ready, 30, f"{self.name} ready on {self.address}", self.logs)
        except BaseException:
            self.stop()
            raise

    def _ready(self) -> bool:
        assert self.proc is not None
        if not self.proc.alive():
            raise AssertionError(f"{self.name} exited with {self.proc.proc.returncode}")
        return self.client.get(self.url + "/-/ready").status_code == 200

    def logs(self, lines: int = 40) -> str:
        return self.proc.tail(lines) if self.proc is not None else ""

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
        self.client.close()

    def __enter__(self) -> _Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Prometheus(_Server):
    """A Prometheus with a generated prometheus.yml; started by the constructor.

    `scrape_targets` become one static job (`job_name`, default "sigma", the
    name the alert rules assume) and Prometheus' default label handling (no
    honor_labels: the channel is `job_name`). `rule_files` are copied
    paths, `alertmanager` is HOST:PORT. Scrape and evaluation every
    `interval` (a Prometheus duration such as "1s").
    """

    name = "prometheus"

    def __init__(self, workdir: Path, *, scrape_targets: Sequence[str],
                 rule_files: Sequence[Path] = (), alertmanager: str | None = None,
                 interval: str = "1s", job_name: str = "sigma",
                 lifecycle: bool = False, port: int | None = None,
                 extra_args: Sequence[str] = ()) -> None:
        super().__init__(workdir, port)
        config: dict[str, Any] = {
            "global": {"scrape_interval": interval, "scrape_timeout": interval,
                       "evaluation_interval": interval},
            "rule_files": [str(p) for p in rule_files],
            "scrape_configs": [{
                "job_name": job_name,
                "static_configs": [{"targets": list(scrape_targets)}],
            }],
        }
        if alertmanager is not None:
            config["alerting"] = {"alertmanagers": [
                {"static_configs": [{"targets": [alertmanager]}]}]}
        self.config_file = self.dir / "prometheus.yml"
        self.config_file.write_text(yaml.safe_dump(config, sort_keys=False))
        args = [
            prometheus_binary(),
            f"--config.file={self.config_file}",
            f"--storage.tsdb.path={self.dir / 'data'}",
            f"--web.listen-address={self.address}",
            # Resend firing alerts to Alertmanager at every evaluation
            # rather than once a minute.
            "--rules.alert.resend-delay=1s",
            *extra_args,
        ]
        if lifecycle:
            args.append("--web.enable-lifecycle")
        self._launch(args)

    # -- HTTP API ---------------------------------------------------------------

    def api(self, path: str, params: Mapping[str, str | int | float] | None = None) -> Any:
        """GET /api/v1/<path>; returns `data`, fails on a non-success answer."""
        response = self.client.get(f"{self.url}/api/v1/{path}", params=params)
        doc = response.json()
        assert doc.get("status") == "success", f"{path} {params}: {response.status_code} {doc}"
        return doc["data"]

    def raw(self, path: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """GET /api/v1/<path>; the whole answer, whatever its status."""
        response = self.client.get(f"{self.url}/api/v1/{path}", params=params)
        doc: dict[str, Any] = response.json()
        return doc

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """An instant query; its vector (or [scalar] for a scalar result)."""
        params: dict[str, Any] = {"query": expr}
        if at is not None:
            params["time"] = at
        data = self.api("query", params)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        result: list[dict[str, Any]] = data["result"]
        return result

    def query_range(self, expr: str, start: float, end: float, step: str = "1s"
                    ) -> list[dict[str, Any]]:
        data = self.api("query_range", {"query": expr, "start": start, "end": end,
                                        "step": step})
        result: list[dict[str, Any]] = data["result"]
        return result

    def value(self, expr: str) -> float | None:
        """The single value of an instant query, or None when empty."""
        result = self.query(expr)
        if not result:
            return None
        assert len(result) == 1, f"{expr}: {len(result)} series"
        return float(result[0]["value"][1])

    def label_values(self, label: str, match: str | None = None) -> list[str]:
        params = {"match[]": match} if match is not None else None
        values: list[str] = self.api(f"label/{label}/values", params)
        return values

    def targets(self) -> list[dict[str, Any]]:
        active: list[dict[str, Any]] = self.api("targets", {"state": "active"})["activeTargets"]
        return active

    def alerts(self) -> list[dict[str, Any]]:
        """Alerts Prometheus holds now (pending and firing)."""
        alerts: list[dict[str, Any]] = self.api("alerts")["alerts"]
        return alerts

    def rules(self) -> list[dict[str, Any]]:
        groups: list[dict[str, Any]] = self.api("rules")["groups"]
        return groups

    def wait_targets_up(self, count: int, timeout: float = 30) -> list[dict[str, Any]]:
        """Wait until `count` scrape targets report health "up"."""
        def up() -> list[dict[str, Any]] | None:
            active = self.targets()
            healthy = [t for t in active if t["health"] == "up"]
            return active if len(healthy) >= count else None

        found: list[dict[str, Any]] = poll(up, timeout, f"{count} scrape target(s) up",
                                           self.logs)
        return found

    def wait_samples(self, expr: str, count: int, timeout: float = 40) -> None:
        """Wait until every series of `expr` has `count` samples in storage."""
        query = f"min(count_over_time({expr}[1h]))"
        poll(lambda: (self.value(query) or 0) >= count, timeout,
             f"{count} samples of {expr}", self.logs)


class Alertmanager(_Server):
    """An Alertmanager with the given config (a dict or YAML text), clustering off."""

    name = "alertmanager"

    def __init__(self, workdir: Path, config: Mapping[str, Any] | str, *,
                 port: int | None = None) -> None:
        super().__init__(workdir, port)
        text = config if isinstance(config, str) else yaml.safe_dump(dict(config),
                                                                     sort_keys=False)
        self.config_file = self.dir / "alertmanager.yml"
        self.config_file.write_text(text)
        self._launch([
            alertmanager_binary(),
            f"--config.file={self.config_file}",
            f"--storage.path={self.dir / 'data'}",
            f"--web.listen-address={self.address}",
            "--cluster.listen-address=",
        ])

    def alerts(self, **params: Any) -> list[dict[str, Any]]:
        """GET /api/v2/alerts (active, silenced and inhibited by default)."""
        params = {"active": "true", "silenced": "true", "inhibited": "true",
                  "unprocessed": "true", **params}
        response = self.client.get(f"{self.url}/api/v2/alerts", params=params)
        response.raise_for_status()
        alerts: list[dict[str, Any]] = response.json()
        return alerts

    def post_alerts(self, alerts: Sequence[Mapping[str, Any]]) -> None:
        """POST /api/v2/alerts, as a Prometheus would."""
        response = self.client.post(f"{self.url}/api/v2/alerts", json=list(alerts))
        assert response.status_code == 200, response.text
