"""The .deb, built once per test session, and clean Debian roots to install it in.

`build_deb` runs scripts/build-deb (minutes the first time on a machine, about
a minute once its build root is cached). A `Root` is a throwaway copy of a
Sigma-host-like Debian bookworm root: the debootstrap root that
scripts/debian-python-base caches for the image, plus systemd and procps (a
Sigma host runs Sigma as a systemd service; `systemd-analyze verify --root`
looks for its targets and for /bin/kill there), and with Python purged, so
that the package must bring its own. That root is cached as a tarball next
to the others. Commands run in it through chroot, in a mount namespace of
their own with /proc mounted, on the host's network (loopback reaches the
simulator).

Root, dpkg-deb, debootstrap, unshare and chroot are needed; CI (.ci/run, as
root) has them all. Only a developer machine that is not root skips.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from conftest import ROOT, Proc

TOOLS = ("dpkg-deb", "debootstrap", "unshare", "chroot")
BUILD_TIMEOUT = 1500  # a cold machine: two debootstraps' worth of downloads, then the build
CACHE = Path(os.environ.get("SIGMA_IMAGE_CACHE")
             or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
             / "sigma-exporter")
# What a Sigma host has that the minimal root lacks, for the gates to find.
HOST_PACKAGES = ("systemd", "procps")
# Bumped when the recipe below changes, so that an old cached root is not reused.
HOST_RECIPE = "1: bookworm python base + systemd procps, python purged"
PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


def require_root_tools() -> None:
    missing = [tool for tool in TOOLS if shutil.which(tool) is None
               and not Path("/usr/sbin", tool).exists()]
    problem = (f"{', '.join(missing)} not installed (apt-get install dpkg debootstrap "
               "util-linux coreutils; .ci/run does)" if missing else
               "building and installing the .deb needs root (chroot, mounts)"
               if os.geteuid() != 0 else "")
    if problem:
        if os.geteuid() != 0 and not os.environ.get("CI"):
            pytest.skip(problem)
        pytest.fail(problem)


def _script(name: str, *args: str, timeout: float) -> str:
    result = subprocess.run([str(ROOT / "scripts" / name), *args], capture_output=True,
                            text=True, timeout=timeout, check=False)
    assert result.returncode == 0, f"scripts/{name}: exit {result.returncode}\n" \
                                   f"{result.stderr[-4000:]}"
    return result.stdout.strip().splitlines()[-1]


def build_deb(out: Path) -> Path:
    started = time.monotonic()
    deb = Path(_script("build-deb", "--out", str(out), timeout=BUILD_TIMEOUT))
    print(f"\nscripts/build-deb: {deb.name} in {time.monotonic() - started:.0f}s")
    assert deb.is_file() and deb.parent == out, deb
    return deb


def _in_root(path: Path, *args: str, user: str | None = None) -> list[str]:
    """The command line that runs `args` in the root at `path`."""
    userspec = [f"--userspec={user}:{user}"] if user else []
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c",
            'mount -t proc proc "$0/proc" && exec "$@"', str(path),
            "env", "-i", f"PATH={PATH}", "LANG=C.UTF-8", "HOME=/root",
            "chroot", *userspec, str(path), *args]


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)


def host_root_tarball() -> Path:
    """The cached Sigma-host root (see the module docstring); made once per machine."""
    base = Path(_script("debian-python-base", "--rootfs", timeout=BUILD_TIMEOUT))
    key = hashlib.sha256(f"{base.name} {HOST_RECIPE}".encode()).hexdigest()[:16]
    tarball = CACHE / f"sigma-host-{key}.tar"
    if tarball.is_file():
        return tarball
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE, prefix="host-root.") as work:
        root = Path(work, "root")
        root.mkdir()
        subprocess.run(["tar", "-C", str(root), "-xf", str(base)], check=True, timeout=300)
        shutil.copy("/etc/resolv.conf", root / "etc" / "resolv.conf")
        result = _run(_in_root(root, "sh", "-ec", f"""
            export DEBIAN_FRONTEND=noninteractive
            apt-get update -qq
            apt-get install -y -qq --no-install-recommends {' '.join(HOST_PACKAGES)}
            apt-get purge -y -qq --auto-remove python3.11-minimal libpython3.11-minimal
            apt-get clean
            rm -rf /var/lib/apt/lists/*
            if command -v python3 python3.11; then exit 1; fi
        """), timeout=BUILD_TIMEOUT)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        # Written aside and renamed: another session may be making it too.
        partial = Path(work, "root.tar")
        subprocess.run(["tar", "-C", str(root), "--numeric-owner", "-cf", str(partial), "."],
                       check=True, timeout=300)
        partial.rename(tarball)
    return tarball


class Root:
    """A fresh copy of the Sigma-host root under `path`; `remove()` deletes it."""

    def __init__(self, tarball: Path, path: Path) -> None:
        self.path = path
        path.mkdir(parents=True)
        subprocess.run(["tar", "-C", str(path), "-xf", str(tarball)], check=True, timeout=300)

    def run(self, *args: str, user: str | None = None, timeout: float = 120,
            check: bool = True) -> subprocess.CompletedProcess[str]:
        result = _run(_in_root(self.path, *args, user=user), timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"in the root: {' '.join(args)}: exit {result.returncode}\n"
                                 f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        return result

    def start(self, *args: str, user: str | None = None, log: Path) -> Proc:
        """A long-running command in the root (its pid is the command's own: every
        step before it execs)."""
        return Proc(_in_root(self.path, *args, user=user), log=log)

    def install(self, deb: Path) -> subprocess.CompletedProcess[str]:
        shutil.copy(deb, self.path / "tmp" / deb.name)
        return self.run("dpkg", "-i", f"/tmp/{deb.name}")

    def file(self, path: str) -> Path:
        return self.path / path.lstrip("/")

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
