"""The container image, really built and run (podman, no Docker Hub needed).

deploy/docker/Dockerfile is built once per session on a Python base made from
Debian packages (tests/containers.py, the `image` fixture), then run the way
the docs tell users to: `--read-only`, the config mounted read-only, as the
image's own non-root user. The exporter in the container watches two
simulated Sigma servers on the host's loopback (`--network host`). The agent
recipe for a plain host (the Quadlet unit, with GPUs through CDI) runs the
same image.

CI (.ci/run, as root) installs podman, buildah, runc and debootstrap, so this
test runs there. It skips only on a developer machine that is not root and
lacks the tools; anywhere else a missing tool fails it.
"""

from __future__ import annotations

import fcntl
import hashlib
import itertools
import os
import re
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, free_port, get, value, wait_until
from containers import Podman
from stack import Simulator

import sigma_exporter

pytestmark = pytest.mark.e2e

UID = 10001  # the Dockerfile's USER


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


# --- the agent on a plain host: the Quadlet unit's [Container], with CDI ---------------

QUADLET = ROOT / "deploy" / "podman" / "sigma-exporter-agent.container"
# What Quadlet (podman 4.4 and later) makes of each [Container] key: `podman run`
# flags. This host's podman 4.3 has no Quadlet, so the test runs the unit's keys
# through this table; a key missing here fails the test rather than being skipped.
QUADLET_FLAGS: dict[str, Callable[[str], list[str]]] = {
    "ContainerName": lambda v: ["--name", v],
    "Network": lambda v: ["--network", v],
    "ReadOnly": lambda v: ["--read-only"] if v == "true" else [],
    "AddDevice": lambda v: ["--device", v],
    "Environment": lambda v: ["--env", v],
    "Volume": lambda v: ["--volume", v],
    "NoNewPrivileges": lambda v: ["--security-opt", "no-new-privileges"] if v == "true" else [],
    "DropCapability": lambda v: ["--cap-drop", v],
}
# NVML's device nodes (docs/deployment.md); the stub spec puts /dev/null behind each.
GPU_NODES = ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia0")


def quadlet_container(path: Path) -> tuple[str, list[tuple[str, str]]]:
    """The unit's image and its other [Container] keys, in order."""
    section, image, keys = "", "", []
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
            continue
        if section == "[Container]":
            key, _, val = line.partition("=")
            if key == "Image":
                image = val
            else:
                keys.append((key, val))
    return image, keys


def quadlet_run_flags(keys: list[tuple[str, str]]) -> list[str]:
    flags = []
    for key, val in keys:
        assert key in QUADLET_FLAGS, f"{key}= of {QUADLET.name} has no podman run flag here"
        flags += QUADLET_FLAGS[key](val)
    return flags


@contextmanager
def stub_gpu_cdi_spec() -> Iterator[None]:
    """`nvidia.com/gpu=all` as a CDI spec of stub device nodes, while a container is made.

    podman 4.3 reads CDI specs only from /etc/cdi and /var/run/cdi; a lock keeps two
    test runs on one machine from defining the same device at once.
    """
    spec_dir = Path("/var/run/cdi")
    spec_dir.mkdir(parents=True, exist_ok=True)
    with (Path(tempfile.gettempdir()) / "sigma-exporter-cdi-test.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        spec = spec_dir / f"sigma-exporter-test-{os.getpid()}.yaml"
        spec.write_text(yaml.safe_dump({
            "cdiVersion": "0.5.0", "kind": "nvidia.com/gpu",
            "devices": [{"name": "all", "containerEdits": {
                "deviceNodes": [{"path": node, "hostPath": "/dev/null"} for node in GPU_NODES],
                "env": ["NVIDIA_VISIBLE_DEVICES=all"]}}]}))
        try:
            yield
        finally:
            spec.unlink(missing_ok=True)


def test_quadlet_unit_uses_this_release_and_the_documented_recipe() -> None:
    image, keys = quadlet_container(QUADLET)
    assert image == f"ghcr.io/sigma-exporter/sigma-exporter:{sigma_exporter.__version__}"
    flags = quadlet_run_flags(keys)
    pairs = set(itertools.pairwise(flags))
    assert ("--device", "nvidia.com/gpu=all") in pairs
    assert ("--env", "NVIDIA_DRIVER_CAPABILITIES=utility") in pairs
    # docs/deployment.md's `podman run` is the same container as the unit.
    doc = (ROOT / "docs" / "deployment.md").read_text()
    command = re.search(r"^podman run -d --name sigma-exporter-agent .*?(?<!\\)$", doc,
                        re.M | re.S)
    assert command is not None, "docs/deployment.md: the agent's podman run"
    words = command.group(0).replace("\\\n", " ").split()
    for flag in flags:
        assert flag in words, flag
    assert words[-1] == image
    for needle in ("--gpus all", "NVIDIA_DRIVER_CAPABILITIES=utility", "--network host",
                   "--read-only", "deploy/podman/sigma-exporter-agent.container"):
        assert needle in doc, needle


def test_agent_container_with_cdi_gpus_polls_local_sigma(
        podman: Podman, image: str, simulator: int,
        tmp_path_factory: pytest.TempPathFactory) -> None:
    """The Quadlet unit's container, run as its keys say, on a plain host.

    Proves what only a real container does: podman accepts the CDI device
    request and puts NVML's nodes in the container, the agent runs read-only,
    unprivileged and without capabilities on the host's network, reaches the
    local Sigma (the simulator) on loopback and serves on the host. NVML itself
    is not there (stub nodes, no driver library): the agent says so and exports
    Sigma's own GPU figures; real NVML is scripts/gpu-check's part.
    """
    config_dir = tmp_path_factory.mktemp("agent-config")
    config_dir.chmod(0o755)
    config = config_dir / "sigma.yml"
    config.write_text(f"targets:\n  - name: sigma-host\n    url: http://127.0.0.1:{simulator}\n"
                      "nvml:\n  enabled: auto\n")
    config.chmod(0o644)
    _, keys = quadlet_container(QUADLET)
    keys = [(key, f"{config_dir}:/etc/sigma-exporter:ro" if key == "Volume" else val)
            for key, val in keys]
    name = f"sigma-exporter-agent-test-{uuid.uuid4().hex[:8]}"
    keys = [(key, name if key == "ContainerName" else val) for key, val in keys]
    port = free_port()
    try:
        with stub_gpu_cdi_spec():
            podman("run", "--detach", "--runtime", "runc", "--read-only-tmpfs=false",
                   "--health-interval", "disable",
                   # This host's port 19911 may be taken; the address moves as the docs say.
                   "--env", f"SIGMA_EXPORTER_WEB_LISTEN_ADDRESS=127.0.0.1:{port}",
                   *quadlet_run_flags(keys), image)
        base = f"http://127.0.0.1:{port}"
        try:
            wait_until(lambda: value(get(base + "/metrics").text, "sigma_up",
                                     target="sigma-host") == 1, 30, "the agent up")
        except AssertionError:
            failed = podman("logs", name, check=False)
            raise AssertionError(failed.stdout[-3000:] + failed.stderr[-3000:]) from None
        check = ("import os, stat\n"
                 f"for node in {list(GPU_NODES)!r}:\n"
                 "    print(node, stat.S_ISCHR(os.stat(node).st_mode))\n"
                 "print(os.environ['NVIDIA_DRIVER_CAPABILITIES'])")
        inside = podman("exec", name, "python", "-c", check).stdout.split()
        assert inside == [word for node in GPU_NODES for word in (node, "True")] + ["utility"]
        pid = int(_inspect(podman, name, "{{.State.Pid}}"))
        status = dict(line.split(":\t", 1) for line in
                      Path(f"/proc/{pid}/status").read_text().splitlines() if ":\t" in line)
        assert status["Uid"].split()[0] == str(UID)
        assert status["CapEff"].strip() == status["CapBnd"].strip() == "0" * 16
        assert status["NoNewPrivs"].strip() == "1"
        log = podman("logs", name).stderr
        assert "agent mode off: NVML not available" in log, log[-3000:]
    finally:
        podman("rm", "--force", "--time", "2", name, check=False)


# The package's source files and their digests, as a program reads them in the image.
_SOURCE_DIGESTS = """
import hashlib, pathlib, sigma_exporter
root = pathlib.Path(sigma_exporter.__file__).parent
for path in sorted(root.rglob("*.py")):
    print(path.relative_to(root), hashlib.sha256(path.read_bytes()).hexdigest())
"""


def test_image_runs_this_trees_code(podman: Podman, image: str) -> None:
    """Every module in the image is this tree's, byte for byte: a layer cache that
    kept an older wheel (podman 4.3 did, for a RUN with a bind mount) fails here."""
    result = podman("run", "--rm", "--runtime", "runc", "--read-only", "--network", "none",
                    "--entrypoint", "python", image, "-c", _SOURCE_DIGESTS)
    in_image = dict(line.split() for line in result.stdout.splitlines())
    package = ROOT / "sigma_exporter"
    here = {str(path.relative_to(package)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(package.rglob("*.py")) if path.name != "_build.py"}
    assert in_image == here
