"""Shared test helpers: fixtures on disk, loopback processes, exposition parsing."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from hypothesis import settings
from prometheus_client.parser import text_string_to_metric_families

if TYPE_CHECKING:
    from containers import Podman

# Property tests: a quick look by default, so `pytest tests/unit` runs in seconds;
# the thorough run is the `ci` profile, which scripts/test selects with
# --hypothesis-profile=ci (the plugin loads it after this file, so it wins).
settings.register_profile("ci", max_examples=1300)
settings.register_profile("quick", max_examples=30)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "quick"))

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
GOLDEN = Path(__file__).resolve().parent / "golden"


# Test modules that must run on one xdist worker, in order, by group:
# - "images": the container image, the .deb and the release share session fixtures
#   (each built once per worker: once in all, then) and the machine's podman store.
# - a module whose one stack (Prometheus, Alertmanager, exporter, simulator: 15-30 s
#   to bring up) serves all its tests: spread over the workers, each built its own.
XDIST_GROUPS = {
    "test_container.py": "images",
    "test_deb.py": "images",
    "test_release.py": "images",
    "test_deploy.py": "images",
    "test_alerts_e2e.py": "alerts-e2e",
    "test_dashboards_e2e.py": "dashboards-e2e",
}


# Collected last (tests/unit comes after e2e and ops) but a minute long each: run first,
# so that no worker starts one when the others are nearly done.
SLOW_FIRST = ("test_fuzz.py",)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: item.path.name not in SLOW_FIRST)  # stable: order kept


@pytest.hookimpl(tryfirst=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """`--dist loadgroup` with the groups above, by file name.

    xdist's own loadgroup reads `xdist_group` marks through a node-id suffix that
    pytest 9 no longer lets it set (`Item._nodeid`): the marks were silently
    ignored and every heavy fixture was built on both workers. Here a test of a
    grouped module is scheduled with its group, and every other test on its own.
    """
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling  # type: ignore[import-untyped]

    class FileGroupScheduling(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0].rsplit("/", 1)[-1]
            return XDIST_GROUPS.get(module, nodeid)

    return FileGroupScheduling(config, log)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update", action="store_true",
                     help="rewrite golden files from the current output (review the diff!)")


@pytest.fixture(autouse=True)
def _logging_as_it_was() -> Iterator[None]:
    """Whatever a test does to logging (`once` and the CLI call logsetup.setup, which
    replaces the root handlers, pytest's capture among them, and raises the level),
    the next test finds it as it was."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    named = {name: logging.getLogger(name).level
             for name in ("sigma_exporter", "apscheduler", "httpx", "aiohttp.access")}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, was in named.items():
        logging.getLogger(name).setLevel(was)


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--update"))


def load_fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def free_ports(count: int) -> int:
    """First of `count` consecutive free loopback ports."""
    from sigma_exporter.sim.demo import free_consecutive_ports

    return free_consecutive_ports(count)


# --- certificates (made with the openssl CLI; no key material is committed) ---

def _openssl(*args: str, cwd: Path) -> None:
    openssl = require_tool("openssl")
    subprocess.run([openssl, *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_ca(directory: Path, name: str) -> None:
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "2",
             "-subj", f"/CN={name}", cwd=directory)


def make_cert(directory: Path, name: str, ca: str, server: bool, san: str | None = None) -> None:
    """`name`.crt/.key signed by `ca`: a server's for 127.0.0.1 and localhost, or a
    client's (with `san`, e.g. "DNS:prometheus.example", as its subjectAltName)."""
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}",
             cwd=directory)
    ext = directory / f"{name}.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n" if server
                   else "extendedKeyUsage=clientAuth\n"
                   + (f"subjectAltName={san}\n" if san else ""))
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
             "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", "-extfile", ext.name,
             cwd=directory)


def require_tool(name: str) -> str:
    """Path of a tool the suite needs; fail (never skip) when it is missing."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed; .ci/run installs it "
                    f"(apt-get install prometheus prometheus-alertmanager)")
    return path


def promtool_check_metrics(body: str) -> None:
    promtool = require_tool("promtool")
    result = subprocess.run([promtool, "check", "metrics"], input=body.encode(),
                            capture_output=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    # promtool prints lint findings even when it exits 0 for some versions.
    assert not (result.stdout + result.stderr).strip(), result.stdout + result.stderr


def samples(body: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Parse text exposition into {(name, labels): value}."""
    out = {}
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def structured(rendered: dict[str, bytes]) -> dict[str, list[tuple[tuple[str, ...], float]]]:
    """A target's rendered exposition read back as {metric: [(label values, value)]}."""
    from sigma_exporter.collect.exposition import read_back

    return dict(read_back(rendered))


def value(body: str, name: str, **labels: str) -> float | None:
    want = frozenset(labels.items())
    for (n, ls), v in samples(body).items():
        if n == name and want <= ls:
            return v
    return None


def total(body: str, name: str, **labels: str) -> float:
    """The sum of every series of `name` that has `labels` (0 when none)."""
    want = frozenset(labels.items())
    return sum(v for (n, ls), v in samples(body).items() if n == name and want <= ls)


def wait_until(predicate: Callable[[], Any], timeout: float = 20.0,
               what: str = "condition") -> Any:
    """Poll `predicate` until truthy; the deadline only bounds a hung test."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = predicate()
            if result:
                return result
        except (httpx.HTTPError, OSError, AssertionError) as exc:
            last_exc = exc
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}; last error: {last_exc!r}")


class Proc:
    """A child process on loopback that is always stopped.

    With `log`, stdout and stderr go to that file (never a pipe nobody reads
    while it runs: a chatty process would fill one and block), and `stop()`
    returns the file as `err`. Without it they are pipes, for the few tests
    that read a stream while the process runs.
    """

    def __init__(self, args: list[str], env: dict[str, str] | None = None, *,
                 log: Path | None = None, cwd: Path = ROOT) -> None:
        self.args = args
        self.log = log
        self._log_file = None
        if log is not None:
            log.parent.mkdir(parents=True, exist_ok=True)
            self._log_file = log.open("wb")
        output: Any = self._log_file if self._log_file is not None else subprocess.PIPE
        self.proc = subprocess.Popen(
            args, stdout=output, stderr=subprocess.STDOUT if log is not None else output,
            stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})}, cwd=cwd,
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, lines: int = 30) -> str:
        """The end of the log, for a failure message ("" without a log)."""
        if self.log is None:
            return ""
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return f"--- {self.args[0]} ... ({self.log}) ---\n" + "\n".join(
            text.splitlines()[-lines:])

    def stop_after_exit(self, timeout: float = 30) -> tuple[int, str, str]:
        """Wait for a process that is expected to exit by itself."""
        if self._log_file is None:  # read the pipes while waiting: a full one blocks the child
            out, err = self.proc.communicate(timeout=timeout)
            return self.proc.returncode, out.decode(), err.decode()
        self.proc.wait(timeout=timeout)
        return self._collect()

    def stop(self, sig: int = signal.SIGTERM) -> tuple[int, str, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self._collect()

    def _collect(self) -> tuple[int, str, str]:
        if self._log_file is None:
            out, err = self.proc.communicate()
            return self.proc.returncode, out.decode(), err.decode()
        self._log_file.close()
        assert self.log is not None
        return self.proc.returncode, "", self.log.read_text(errors="replace")


def sigma_exporter_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "sigma_exporter.cli", *args]


@pytest.fixture
def procs() -> Iterator[Callable[..., Proc]]:
    started: list[Proc] = []

    def start(*args: str, env: dict[str, str] | None = None) -> Proc:
        proc = Proc(sigma_exporter_cmd(*args), env)
        started.append(proc)
        return proc

    yield start
    for proc in reversed(started):
        proc.stop()


def get(url: str, **kwargs: Any) -> httpx.Response:
    return httpx.get(url, timeout=5, trust_env=False, **kwargs)


@pytest.fixture(scope="session")
def built_deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """sigma-exporter_VERSION_amd64.deb from scripts/build-deb, built once per session for
    every test that needs it (tests/debpkg.py)."""
    from debpkg import build_deb, require_root_tools  # here: debpkg imports conftest

    require_root_tools()
    return build_deb(tmp_path_factory.mktemp("deb"))


@pytest.fixture(scope="session")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Podman:
    """tests/containers.py's Podman (a containers.conf fit for this sandbox)."""
    from containers import make_podman  # here: containers imports conftest

    return make_podman(tmp_path_factory.mktemp("containers"))


@pytest.fixture(scope="session")
def image(podman: Podman) -> str:
    """The exporter's image, built once per session (tests/containers.py)."""
    from containers import build_image

    return build_image(podman)
