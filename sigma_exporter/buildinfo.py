"""What this build is: version, git revision, who built it and when, on which Python.

Release builds bake the revision, the build user and the date into
`sigma_exporter/_build.py` (written by scripts/stage-source, which
scripts/build-deb and scripts/release use; git ignores the file). Run from a
source checkout, the revision comes from git. Anything else (a wheel built
by hand from a tarball) says `unknown` and leaves out what it does not know.

`--version` prints it the way Prometheus' own programs do; the
`sigma_exporter_build_info` series carries the version and revision.
"""

from __future__ import annotations

import functools
import importlib
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path

from sigma_exporter import __version__

# The Go names Prometheus prints for the machine (platform: linux/amd64).
_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "i686": "386", "armv7l": "arm"}


@dataclass(frozen=True)
class BuildInfo:
    version: str
    revision: str  # the git commit, "-dirty" when built from uncommitted changes
    build_user: str | None = None
    build_date: str | None = None  # UTC, as Prometheus writes it: 20261207-10:11:12


def _baked() -> BuildInfo | None:
    try:
        build = importlib.import_module("sigma_exporter._build")
    except ImportError:
        return None
    return BuildInfo(__version__, str(build.REVISION), getattr(build, "BUILD_USER", None),
                     getattr(build, "BUILD_DATE", None))


def git_revision(checkout: Path) -> str | None:
    """HEAD of the checkout, "-dirty" added when tracked files differ from it."""
    def git(*args: str) -> str:
        # The developer's own git, with fixed arguments, only in a source checkout.
        return subprocess.run(["git", "-C", str(checkout), *args],  # noqa: S603, S607
                              capture_output=True, text=True, timeout=5,
                              check=True).stdout.strip()

    try:
        revision = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return revision + ("-dirty" if dirty else "")


def _from_checkout() -> BuildInfo | None:
    # Only the checkout this package is in: an installed copy that happens to
    # sit inside some other repository (a venv in a project) must not take its
    # revision.
    root = Path(__file__).resolve().parent.parent
    if not ((root / ".git").exists() and (root / "pyproject.toml").is_file()):
        return None
    revision = git_revision(root)
    return BuildInfo(__version__, revision) if revision else None


@functools.cache
def current() -> BuildInfo:
    return _baked() or _from_checkout() or BuildInfo(__version__, "unknown")


def platform_name() -> str:
    machine = platform.machine()
    return f"{platform.system().lower()}/{_ARCH.get(machine, machine)}"


def version_text(info: BuildInfo | None = None) -> str:
    """`--version`, in the layout of Prometheus' programs (prometheus --version)."""
    info = info or current()
    lines = [f"sigma-exporter, version {info.version} (revision: {info.revision})"]
    if info.build_user:
        lines.append(f"  build user:       {info.build_user}")
    if info.build_date:
        lines.append(f"  build date:       {info.build_date}")
    lines.append(f"  python version:   {platform.python_implementation()} "
                 f"{platform.python_version()}")
    lines.append(f"  platform:         {platform_name()}")
    return "\n".join(lines)
