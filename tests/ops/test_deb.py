"""The .deb for Sigma hosts: what it holds, where it runs, and its life in dpkg.

scripts/build-deb builds it once per session (the `built_deb` fixture: a
PyInstaller bundle made in a Debian bookworm root, minutes on a cold machine).
Then:

- every ELF file in it needs glibc 2.35 at most (Ubuntu 22.04's), and
  libstdc++, libgcc_s and NVML are the host's, never bundled; every library
  an ELF file needs is bundled or comes from a package the .deb depends on;
- `dpkg -i` into a clean Sigma-host root (tests/debpkg.py: bookworm with
  systemd, without Python), `systemd-analyze verify` of the installed units,
  then the installed binary's `--version`, `check-config`, `once` against
  the simulator (the same series as the wheel's) and the agent serving as
  the package's system user;
- an edited config survives a reinstall and `dpkg -r`; `dpkg --purge`
  removes it.

Slow (a minute or two for the build, seconds per root), and nothing faster
can stand in: which libraries PyInstaller bundles and what they need is
known only from a real build (bookworm's libstdc++ and libexpat needing
glibc 2.36 was found that way), and conffile handling, the maintainer
scripts and the units' paths are only exercised by dpkg in a clean root.
"""

from __future__ import annotations

import gzip
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import (
    ROOT,
    free_port,
    get,
    require_tool,
    sigma_exporter_cmd,
    value,
    wait_until,
)
from debpkg import Root, host_root_tarball
from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile
from elftools.elf.gnuversions import GNUVerNeedSection
from prometheus_client.parser import text_string_to_metric_families
from stack import Simulator

import sigma_exporter

pytestmark = pytest.mark.e2e

VERSION = sigma_exporter.__version__
BUNDLE = "opt/sigma-exporter"
UNITS = ("sigma-exporter.service", "sigma-exporter-agent.service", "sigma-exporter.socket")
# The newest symbol versions Ubuntu 22.04 (jammy) has: glibc 2.35, libstdc++6 and
# libgcc-s1 of GCC 12, zlib 1.2.11.
JAMMY_CEILINGS = {"GLIBC": (2, 35), "GLIBCXX": (3, 4, 30), "CXXABI": (1, 3, 13),
                  "GCC": (12, 0, 0), "ZLIB": (1, 2, 9)}
# Host libraries the bundle may need, by the Debian/Ubuntu package that has them.
# libz is bundled too, but the executable itself loads the host's first, and a
# library already loaded is reused by its name: the host's has to do.
HOST_LIBRARY_PACKAGES = {
    "libc.so.6": "libc6", "libm.so.6": "libc6", "libdl.so.2": "libc6",
    "libpthread.so.0": "libc6", "librt.so.1": "libc6", "libutil.so.1": "libc6",
    "ld-linux-x86-64.so.2": "libc6", "libstdc++.so.6": "libstdc++6",
    "libgcc_s.so.1": "libgcc-s1", "libexpat.so.1": "libexpat1", "libz.so.1": "zlib1g",
}
NEVER_BUNDLED = ("libstdc++.so", "libgcc_s.so", "libnvidia-ml.so")


@pytest.fixture(scope="module")
def unpacked(built_deb: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    tree = tmp_path_factory.mktemp("unpacked")
    subprocess.run(["dpkg-deb", "-x", str(built_deb), str(tree)], check=True, timeout=120)
    subprocess.run(["dpkg-deb", "-e", str(built_deb), str(tree / "DEBIAN")], check=True,
                   timeout=60)
    return tree


def _control(unpacked: Path) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in (unpacked / "DEBIAN" / "control").read_text().splitlines():
        if line and not line.startswith(" "):
            key, _, val = line.partition(":")
            fields[key] = val.strip()
    return fields


def _depends(unpacked: Path) -> dict[str, str]:
    """Depends: package -> version constraint ("" for none)."""
    out = {}
    for item in _control(unpacked)["Depends"].split(","):
        match = re.fullmatch(r"\s*([a-z0-9.+-]+)\s*(?:\((.*)\))?\s*", item)
        assert match, item
        out[match.group(1)] = match.group(2) or ""
    return out


def test_package_holds_the_bundle_units_and_conffiles(built_deb: Path, unpacked: Path) -> None:
    assert built_deb.name == f"sigma-exporter_{VERSION}_amd64.deb"
    control = _control(unpacked)
    assert control["Package"] == "sigma-exporter" and control["Version"] == VERSION
    assert control["Architecture"] == "amd64"
    assert "python" not in control["Depends"]  # the bundle brings its own
    assert (unpacked / "usr/bin/sigma-exporter").readlink() == \
        Path("/opt/sigma-exporter/sigma-exporter")
    assert (unpacked / BUNDLE / "sigma-exporter").stat().st_mode & 0o111
    for unit in UNITS:
        assert (unpacked / "lib/systemd/system" / unit).is_file(), unit
    conffiles = (unpacked / "DEBIAN" / "conffiles").read_text().split()
    assert conffiles == ["/etc/default/sigma-exporter", "/etc/sigma-exporter/sigma.yml"]
    # The Sigma host's config is the agent's, the environment file the one of deploy/.
    assert (unpacked / "etc/sigma-exporter/sigma.yml").read_text() == \
        (ROOT / "deploy/systemd/sigma-agent.yml").read_text()
    assert (unpacked / "etc/default/sigma-exporter").read_text() == \
        (ROOT / "deploy/systemd/sigma-exporter.default").read_text()
    for script in ("postinst", "prerm", "postrm"):
        assert (unpacked / "DEBIAN" / script).stat().st_mode & 0o111, script


def test_packaged_units_differ_from_deploy_only_in_binary_and_user(unpacked: Path) -> None:
    """The hardening tests of tests/ops/test_deploy.py hold for the packaged units too:
    the only changes are the binary's path and a static user for a dynamic one."""
    for unit in ("sigma-exporter.service", "sigma-exporter-agent.service"):
        def directives(text: str) -> list[str]:
            return [line for line in text.splitlines() if line and not line.startswith("#")]

        shipped = directives((ROOT / "deploy/systemd" / unit).read_text())
        packaged = directives((unpacked / "lib/systemd/system" / unit).read_text())
        expected = []
        for line in shipped:
            if line == "DynamicUser=yes":
                expected += ["User=sigma-exporter", "Group=sigma-exporter"]
            else:
                expected.append(line.replace("/usr/local/bin/sigma-exporter",
                                             "/usr/bin/sigma-exporter"))
        assert packaged == expected, unit


def _version_key(name: str) -> tuple[str, tuple[int, ...]] | None:
    prefix, _, number = name.partition("_")
    if not re.fullmatch(r"\d+(\.\d+)*", number):
        return None  # GLIBC_PRIVATE and the like: no version to compare
    return prefix, tuple(int(part) for part in number.split("."))


def _elf_files(tree: Path) -> Iterator[Path]:
    for path in sorted(tree.rglob("*")):
        if path.is_file() and not path.is_symlink():
            with path.open("rb") as f:
                if f.read(4) == b"\x7fELF":
                    yield path


def _needs(path: Path) -> tuple[list[str], dict[str, set[str]]]:
    """The libraries an ELF file needs (DT_NEEDED) and the symbol versions it needs
    from each."""
    needed: list[str] = []
    versions: dict[str, set[str]] = {}
    with path.open("rb") as f:
        elf = ELFFile(f)
        for section in elf.iter_sections():
            if isinstance(section, DynamicSection):
                needed += [tag.needed for tag in section.iter_tags()  # type: ignore[attr-defined]
                           if tag.entry.d_tag == "DT_NEEDED"]
            elif isinstance(section, GNUVerNeedSection):
                for library, auxiliaries in section.iter_versions():
                    versions.setdefault(str(library.name), set()).update(
                        aux.name for aux in auxiliaries)
    return needed, versions


def test_no_elf_needs_more_than_ubuntu_22_04_has(unpacked: Path) -> None:
    """glibc 2.35 at most; libstdc++, libgcc_s and NVML are the host's, never bundled.

    Every library any ELF file needs is bundled or in a package the .deb depends on,
    and what it needs of a host library (a symbol version), Ubuntu 22.04's has."""
    bundle = unpacked / BUNDLE
    files = list(_elf_files(unpacked))
    assert len(files) > 30, files  # the executable, libpython, OpenSSL, extensions
    bundled = {path.name for path in files}
    for name in bundled:
        assert not name.startswith(NEVER_BUNDLED), name
    depends = _depends(unpacked)
    newest: dict[str, tuple[int, ...]] = {}
    for path in files:
        needed, versions = _needs(path)
        where = path.relative_to(unpacked)
        for library in needed:
            assert library in bundled or library in HOST_LIBRARY_PACKAGES, (where, library)
            if library not in bundled:
                assert HOST_LIBRARY_PACKAGES[library] in depends, (where, library)
        for library, names in versions.items():
            if library not in HOST_LIBRARY_PACKAGES:
                continue  # bundled, and checked as a file of its own
            for version in names:
                key = _version_key(version)
                if key is None:
                    continue
                prefix, number = key
                assert prefix in JAMMY_CEILINGS, (where, library, version)
                assert number <= JAMMY_CEILINGS[prefix], f"{where} needs {version} of {library}"
                newest[prefix] = max(newest.get(prefix, ()), number)
    # The libc6 the package asks for covers what its files need, and Ubuntu 22.04 has it.
    declared = re.fullmatch(r">= ([\d.]+)", depends["libc6"])
    assert declared, depends["libc6"]
    libc6 = tuple(int(part) for part in declared.group(1).split("."))
    assert newest["GLIBC"] <= libc6 <= JAMMY_CEILINGS["GLIBC"]
    print(f"\nnewest symbol versions needed: {newest}")
    assert (bundle / "_internal" / "libpython3.11.so.1.0").is_file()


# --- installed into a clean Sigma-host root --------------------------------------------


@pytest.fixture(scope="module")
def host_root() -> Path:
    return host_root_tarball()


@pytest.fixture(scope="module")
def installed(built_deb: Path, host_root: Path,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[Root]:
    root = Root(host_root, tmp_path_factory.mktemp("installed") / "root")
    try:
        assert not root.file("/usr/bin/python3").exists()  # no Python on this host
        result = root.install(built_deb)
        assert "Setting up sigma-exporter" in result.stdout, result.stdout
        yield root
    finally:
        root.remove()


def test_gate_catches_a_bookworm_library(installed: Root) -> None:
    """The check above can fail: bookworm's own libstdc++ (which the bundle leaves to
    the host) needs glibc 2.36."""
    library = installed.file("/usr/lib/x86_64-linux-gnu/libstdc++.so.6").resolve()
    _, versions = _needs(library)
    assert "GLIBC_2.36" in versions["libc.so.6"]


def test_installed_units_verify(installed: Root) -> None:
    """`systemd-analyze verify` on the units as dpkg put them, against the root's own
    systemd targets and the installed binary; and their exposure is as low as the
    deploy/ units' (tests/ops/test_deploy.py)."""
    tool = require_tool("systemd-analyze")
    units = [f"/lib/systemd/system/{unit}" for unit in UNITS]
    result = subprocess.run([tool, "verify", "--man=no", f"--root={installed.path}", *units],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), \
        result.stdout + result.stderr
    for unit, ceiling in (("sigma-exporter.service", 1.1),
                          ("sigma-exporter-agent.service", 1.5)):
        result = subprocess.run([tool, "security", "--offline=yes", "--no-pager",
                                 f"--root={installed.path}", f"/lib/systemd/system/{unit}"],
                                capture_output=True, text=True, timeout=120, check=False)
        score = re.search(r"Overall exposure level for \S+: (\d+\.\d)", result.stdout)
        assert score is not None, result.stdout[-2000:] + result.stderr
        assert float(score.group(1)) <= ceiling, (unit, score.group(1))
    # postinst made the system user and enabled the agent (not the central unit).
    assert re.search(r"^sigma-exporter:x:\d+:\d+:", installed.file("/etc/passwd").read_text(),
                     re.M)
    wants = installed.file("/etc/systemd/system/multi-user.target.wants")
    assert (wants / "sigma-exporter-agent.service").readlink() == \
        Path("/lib/systemd/system/sigma-exporter-agent.service")
    assert not (wants / "sigma-exporter.service").is_symlink()


def test_installed_binary_version_and_check_config(installed: Root) -> None:
    version = installed.run("sigma-exporter", "--version").stdout
    lines = version.splitlines()
    assert lines[0].startswith(f"sigma-exporter, version {VERSION} (revision: "), version
    assert re.match(r"^sigma-exporter, version \S+ \(revision: [0-9a-f]{40}(-dirty)?\)$",
                    lines[0]), lines[0]  # baked in by the build, not "unknown"
    assert "  python version:   CPython 3.11." in version
    assert "  platform:         linux/amd64" in version
    # The shipped agent config, as check-config reads it on a host without the
    # NVIDIA driver: valid YAML, refused for NVML with the fix named (exit 2).
    syntax = installed.run("sigma-exporter", "check-config", "--syntax-only",
                           "/etc/sigma-exporter/sigma.yml")
    assert syntax.returncode == 0, syntax.stderr
    full = installed.run("sigma-exporter", "check-config", "/etc/sigma-exporter/sigma.yml",
                         check=False)
    assert full.returncode == 2, full.stdout + full.stderr
    assert "NVML cannot be used" in full.stderr and "nvml.enabled: auto" in full.stderr


@pytest.fixture(scope="module")
def simulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulator]:
    # --static: the same answer to every poll, so two polls can be compared.
    sim = Simulator(tmp_path_factory.mktemp("simulator"), 1, "--static")
    try:
        sim.wait_ready(30)
        yield sim
    finally:
        sim.stop()


def _series(exposition: str) -> set[tuple[str, frozenset[tuple[str, str]]]]:
    return {(sample.name, frozenset(sample.labels.items()))
            for family in text_string_to_metric_families(exposition)
            for sample in family.samples}


def test_bundle_once_prints_the_same_series_as_the_wheel(installed: Root,
                                                         simulator: Simulator) -> None:
    """The frozen bundle and the Python package poll the same server (one fixed
    answer, channels included) into the same series, names and labels."""
    url = simulator.urls[0]
    bundle = installed.run("sigma-exporter", "once", "--target", url)
    wheel = subprocess.run(sigma_exporter_cmd("once", "--target", url), capture_output=True,
                           text=True, timeout=60, check=True)
    bundle_series, wheel_series = _series(bundle.stdout), _series(wheel.stdout)
    assert len(bundle_series) > 100, bundle.stdout[-2000:]
    assert bundle_series == wheel_series, (bundle_series ^ wheel_series)


def test_installed_agent_serves_as_the_package_user(installed: Root, simulator: Simulator,
                                                    tmp_path: Path) -> None:
    """The daemon as systemd would run it (the package's user, the installed binary):
    the web thread, the scheduler and the process metrics work in the bundle too."""
    port = free_port()
    config = installed.file("/tmp/sigma-test.yml")
    config.write_text(f"targets:\n  - name: sigma-host\n    url: {simulator.urls[0]}\n"
                      "nvml:\n  enabled: false\n")
    config.chmod(0o644)
    exporter = installed.start("/usr/bin/sigma-exporter", "--config.file=/tmp/sigma-test.yml",
                               f"--web.listen-address=127.0.0.1:{port}",
                               user="sigma-exporter", log=tmp_path / "exporter.log")
    base = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_until(lambda: value(get(base + "/metrics").text, "sigma_up",
                                     target="sigma-host") == 1, 60, "the agent up")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{exporter.tail()}") from None
        uid = next(line.split(":")[2] for line in
                   installed.file("/etc/passwd").read_text().splitlines()
                   if line.startswith("sigma-exporter:"))
        status = Path(f"/proc/{exporter.proc.pid}/status").read_text()
        assert re.search(rf"^Uid:\s+{uid}\s", status, re.M), status
        body = get(base + "/metrics").text
        revision = installed.run("sigma-exporter", "--version").stdout.split("revision: ")[1]
        assert value(body, "sigma_exporter_build_info", version=VERSION,
                     revision=revision.split(")")[0]) == 1
        assert "python_gc_objects_collected_total" in body and "python_info{" in body
    finally:
        code, _, log = exporter.stop()
    assert code == 0, log[-3000:]
    assert "caller=" in log and "level=info" in log


def test_reinstall_and_remove_keep_the_config_and_purge_removes_it(
        built_deb: Path, host_root: Path, tmp_path: Path) -> None:
    """dpkg's conffile rules and the maintainer scripts, on a root of its own: only a
    real dpkg running the real postinst, prerm and postrm shows an edit kept, the
    agent masked on remove and everything of the package gone on purge."""
    root = Root(host_root, tmp_path / "root")
    try:
        root.install(built_deb)
        config = root.file("/etc/sigma-exporter/sigma.yml")
        edited = config.read_text().replace("timeout: 5s", "timeout: 3s")
        assert edited != config.read_text()
        config.write_text(edited)
        root.install(built_deb)  # a reinstall (or an upgrade) keeps the edit, unasked
        assert config.read_text() == edited

        root.run("dpkg", "-r", "sigma-exporter")
        assert config.read_text() == edited
        assert root.file("/etc/default/sigma-exporter").is_file()
        for gone in ("/usr/bin/sigma-exporter", "/opt/sigma-exporter",
                     "/lib/systemd/system/sigma-exporter-agent.service"):
            assert not root.file(gone).exists() and not root.file(gone).is_symlink(), gone
        assert _status(root) == "config-files"
        # Masked while its config remains, so nothing starts it.
        mask = root.file("/etc/systemd/system/sigma-exporter-agent.service")
        assert mask.is_symlink() and mask.readlink() == Path("/dev/null")

        root.run("dpkg", "--purge", "sigma-exporter")
        for gone in ("/etc/sigma-exporter", "/etc/default/sigma-exporter",
                     "/etc/systemd/system/sigma-exporter-agent.service",
                     "/etc/systemd/system/multi-user.target.wants/sigma-exporter-agent.service"):
            assert not root.file(gone).exists() and not root.file(gone).is_symlink(), gone
        assert _status(root) == "not-installed"
        # The system user stays, as in every Debian package (files it owns may remain).
        assert "\nsigma-exporter:" in "\n" + root.file("/etc/passwd").read_text()
    finally:
        root.remove()


def _status(root: Root) -> str:
    result = root.run("dpkg-query", "-W", "-f=${db:Status-Status}", "sigma-exporter",
                      check=False)
    return result.stdout.strip() or "not-installed"


def test_deb_changelog_is_the_projects(unpacked: Path) -> None:
    changelog = unpacked / "usr/share/doc/sigma-exporter/changelog.gz"
    assert gzip.decompress(changelog.read_bytes()).decode() == \
        (ROOT / "CHANGELOG.md").read_text()
