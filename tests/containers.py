"""podman for the tests, and the exporter's image built once per session.

The image is deploy/docker/Dockerfile on a Python base made from Debian
packages (scripts/debian-python-base: debootstrap, cached between runs), built
with `podman build --isolation=chroot` (crun refuses this kind of machine's
hybrid cgroups). tests/ops/test_container.py runs it; tests/ops/test_release.py
saves it as the release's image. The session fixtures `podman` and `image`
(tests/conftest.py) hand them out.

CI (.ci/run, as root) installs podman, buildah, runc and debootstrap. Only a
developer machine that is not root and lacks the tools skips; anywhere else a
missing tool fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import ROOT

TOOLS = ("podman", "runc", "debootstrap")
IMAGE = "localhost/sigma-exporter:test"  # one tag, overwritten: its layers are the cache
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


def make_podman(directory: Path) -> Podman:
    tools = _tools()
    conf = directory / "containers.conf"
    # The sandbox these tests run in forbids raising rlimits, which podman
    # does for every container by default (nofile, nproc).
    conf.write_text("[containers]\ndefault_ulimits = []\n")
    return Podman(tools["podman"], {**os.environ, "CONTAINERS_CONF": str(conf)})


def build_image(podman: Podman) -> str:
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
