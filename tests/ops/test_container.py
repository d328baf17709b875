"""The container image, really built and run (podman, no Docker Hub needed).

deploy/docker/Dockerfile is built on a Python base made from Debian packages
(scripts/debian-python-base: debootstrap, cached between runs) with
`podman build --isolation=chroot` (crun refuses this kind of machine's hybrid
cgroups), then run the way the docs tell users to: `--read-only`, the config
mounted read-only, as the image's own non-root user. The exporter in the
container watches two simulated Sigma servers on the host's loopback
(`--network host`).

CI (.ci/run, as root) installs podman, buildah, runc and debootstrap, so this
test runs there. It skips only on a developer machine that is not root and
lacks the tools; anywhere else a missing tool fails it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import ROOT, free_port, get, value, wait_until
from stack import Simulator

pytestmark = pytest.mark.e2e

TOOLS = ("podman", "runc", "debootstrap")
IMAGE = "localhost/sigma-exporter:test"  # one tag, overwritten: its layers are the cache
UID = 10001  # the Dockerfile's USER
BUILD_TIMEOUT = 600


def _tools() -> dict[str, str]:
    found = {name: shutil.which(name) for name in TOOLS}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        message = (f"{', '.join(missing)} not installed: apt-get install podman buildah runc "
                   "debootstrap (.ci/run does)")
        if os.geteuid() != 0 and not os.environ.get("CI"):
            pytest.skip(message)
        pytest.fail(message)
    return {name: path for name, path in found.items() if path is not None}


@dataclass
class Podman:
    path: str
    env: dict[str, str]

    def __call__(self, *args: str, timeout: float = 120,
                 check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([self.path, *args], capture_output=True, text=True,
                                timeout=timeout, env=self.env, check=False)
        if check and result.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)}: exit {result.returncode}\n"
                                 f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        return result


@pytest.fixture(scope="module")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Podman:
    tools = _tools()
    conf = tmp_path_factory.mktemp("containers") / "containers.conf"
    # The sandbox these tests run in forbids raising rlimits, which podman
    # does for every container by default (nofile, nproc).
    conf.write_text("[containers]\ndefault_ulimits = []\n")
    return Podman(tools["podman"], {**os.environ, "CONTAINERS_CONF": str(conf)})


@pytest.fixture(scope="module")
def image(podman: Podman) -> str:
    started = time.monotonic()
    base = subprocess.run([str(ROOT / "scripts" / "debian-python-base")], capture_output=True,
                          text=True, timeout=BUILD_TIMEOUT, env=podman.env, check=False)
    assert base.returncode == 0, base.stderr[-4000:]
    base_image = base.stdout.strip().splitlines()[-1]
    base_s = time.monotonic() - started
    podman("build", "--isolation=chroot", "--network=host", "--format=docker",
           "--ignorefile", str(ROOT / "deploy/docker/Dockerfile.dockerignore"),
           "--build-arg", f"PYTHON_IMAGE={base_image}",
           "-f", str(ROOT / "deploy/docker/Dockerfile"), "-t", IMAGE, str(ROOT),
           timeout=BUILD_TIMEOUT)
    print(f"\nbase image {base_image} in {base_s:.0f}s, "
          f"image build {time.monotonic() - started - base_s:.0f}s")
    # Each source change leaves the last build's stages untagged: keep a day of
    # them as the layer cache, drop what is older so repeated runs do not fill
    # the disk.
    podman("image", "prune", "--force", "--filter", "until=24h", check=False)
    return IMAGE


def _config(path: Path, first_port: int, names: tuple[str, ...]) -> Path:
    lines = ["defaults:", "  interval: 2s", "  timeout: 1s", "targets:"]
    for i, name in enumerate(names):
        lines += [f"  - name: {name}", f"    url: http://127.0.0.1:{first_port + i}"]
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o644)  # readable by the container's uid
    return path


NAMES = ("sim-a", "sim-b")


@dataclass
class Running:
    name: str
    port: int
    base: str


@pytest.fixture(scope="module")
def simulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    sim = Simulator(tmp_path_factory.mktemp("simulator"), len(NAMES))
    try:
        sim.wait_ready(20)
        yield sim.first_port
    finally:
        sim.stop()


@pytest.fixture(scope="module")
def start(podman: Podman, image: str, simulator: int,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[], Running]]:
    """Starts containers of the image, as the docs say to run it; removes them all after."""
    names: list[str] = []
    config_dir = tmp_path_factory.mktemp("config")
    config_dir.chmod(0o755)
    config = _config(config_dir / "sigma.yml", simulator, NAMES)

    def run() -> Running:
        name = f"sigma-exporter-test-{uuid.uuid4().hex[:8]}"
        port = free_port()
        names.append(name)
        podman("run", "--detach", "--name", name, "--runtime", "runc", "--read-only",
               # podman, unlike Docker, would mount writable tmpfs on /tmp and /run.
               "--read-only-tmpfs=false", "--network", "host",
               # No systemd timer for the health check here; the test runs it itself.
               "--health-interval", "disable",
               # The health check (and the exporter) read the listen address from here.
               "--env", f"SIGMA_EXPORTER_WEB_LISTEN_ADDRESS=127.0.0.1:{port}",
               "--volume", f"{config}:/etc/sigma-exporter/sigma.yml:ro", image)
        return Running(name, port, f"http://127.0.0.1:{port}")

    yield run
    for name in names:
        podman("rm", "--force", "--time", "2", name, check=False)


@pytest.fixture(scope="module")
def running(start: Callable[[], Running]) -> Running:
    return start()


def _metrics(running: Running) -> str:
    response = get(running.base + "/metrics")
    response.raise_for_status()
    return response.text


def test_container_serves_every_target(podman: Podman, running: Running) -> None:
    def all_up() -> bool:
        body = _metrics(running)
        return all(value(body, "sigma_up", target=name) == 1 for name in NAMES)

    try:
        wait_until(all_up, 30, "every target up in the container's /metrics")
    except AssertionError:
        logs = podman("logs", running.name, check=False)
        raise AssertionError(logs.stdout[-3000:] + logs.stderr[-3000:]) from None
    body = _metrics(running)
    assert value(body, "sigma_exporter_build_info") == 1
    assert get(running.base + "/-/ready").status_code == 200


def _inspect(podman: Podman, name: str, template: str) -> str:
    return podman("inspect", "--format", template, name).stdout.strip()


def test_container_runs_as_non_root_on_a_read_only_root(podman: Podman,
                                                        running: Running) -> None:
    pid = int(_inspect(podman, running.name, "{{.State.Pid}}"))
    assert pid > 0
    # The exporter's process as the host's kernel sees it (no user namespace).
    status = Path(f"/proc/{pid}/status").read_text()
    uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
    assert uids == [str(UID)] * 4, status
    assert podman("exec", running.name, "id", "-u").stdout.strip() == str(UID)
    # Nothing is writable, even for root in the container: not the root
    # filesystem, not /tmp, not the config mounted read-only.
    for path in ("/probe-write", "/tmp/probe-write", "/etc/sigma-exporter/sigma.yml"):
        result = podman("exec", "--user", "0", running.name, "python", "-c",
                        f"open({path!r}, 'a').close()", check=False)
        assert result.returncode != 0, path
        assert "Read-only file system" in result.stderr, result.stderr


def test_container_health_check_succeeds_inside_it(podman: Podman, running: Running) -> None:
    health = _inspect(podman, running.name, "{{json .Config.Healthcheck}}")
    assert "/-/healthy" in health  # the Dockerfile's HEALTHCHECK survived the build
    wait_until(lambda: get(running.base + "/-/healthy").status_code == 200, 20, "healthy")
    result = podman("healthcheck", "run", running.name, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_container_stops_on_sigterm_within_seconds(podman: Podman,
                                                   start: Callable[[], Running]) -> None:
    container = start()
    wait_until(lambda: get(container.base + "/-/ready").status_code == 200, 30, "ready")
    started = time.monotonic()
    podman("kill", "--signal", "TERM", container.name)
    exit_code = podman("wait", container.name, timeout=30).stdout.strip()
    elapsed = time.monotonic() - started
    assert exit_code == "0", podman("logs", container.name, check=False).stderr[-3000:]
    assert elapsed < 5, f"took {elapsed:.1f}s to stop on SIGTERM"
    logs = podman("logs", container.name).stderr
    assert "shutting down" in logs


# Every distribution the exporter needs, walked from its metadata inside the image.
_CLOSURE = """
import importlib.metadata as md, re
seen, todo = {}, ["sigma-exporter"]
while todo:
    name = re.split(r"[ ;<>=!~\\[(]", todo.pop(), maxsplit=1)[0]
    key = name.lower().replace("_", "-")
    if key in seen:
        continue
    try:
        seen[key] = md.version(name)
    except md.PackageNotFoundError:  # behind a marker or an extra: not installed, not run
        continue
    todo.extend(r for r in md.requires(name) or [] if "extra ==" not in r)
print("\\n".join(f"{k}=={v}" for k, v in sorted(seen.items())))
"""


def test_image_holds_exactly_the_locked_dependencies(podman: Podman, image: str) -> None:
    """What the exporter runs on in the image is what deploy/docker/requirements.txt pins."""
    result = podman("run", "--rm", "--runtime", "runc", "--read-only", "--network", "none",
                    "--entrypoint", "python", image, "-c", _CLOSURE)
    installed = dict(line.split("==") for line in result.stdout.split())
    locked = _locked_versions()
    del installed["sigma-exporter"]
    assert len(installed) >= 15, installed
    for name, version in installed.items():
        assert locked.get(_norm(name)) == version, (name, version)


def _norm(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def _locked_versions() -> dict[str, str]:
    out = {}
    for line in (ROOT / "deploy/docker/requirements.txt").read_text().splitlines():
        if "==" in line and not line.startswith((" ", "#")):
            name, _, rest = line.partition("==")
            out[_norm(name)] = rest.split()[0]
    return out
