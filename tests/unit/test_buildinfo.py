"""What a build says it is: `--version` in Prometheus' layout, and the build_info series.

The revision comes from the file a release build bakes in, else from the git
checkout the package runs from, else it is "unknown"; each case is run here.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import ROOT
from prometheus_client.parser import text_string_to_metric_families

import sigma_exporter
from sigma_exporter import buildinfo
from sigma_exporter.cli import main
from sigma_exporter.poll.view import ConfigReload, View
from sigma_exporter.web.exporter import Exporter

# `prometheus --version`, line by line (go version becomes python version).
PROMETHEUS_LAYOUT = [
    r"sigma-exporter, version \S+ \(revision: \S+\)",
    r"  build user:       \S+",
    r"  build date:       \d{8}-\d\d:\d\d:\d\d",
    r"  python version:   CPython 3\.\d+\.\d+",
    r"  platform:         linux/(amd64|arm64)",
]


@pytest.fixture
def baked(monkeypatch: pytest.MonkeyPatch) -> Iterator[types.ModuleType]:
    """The `_build` module a release build writes, as scripts/stage-source writes it."""
    module = types.ModuleType("sigma_exporter._build")
    module.REVISION = "0123456789abcdef0123456789abcdef01234567"  # type: ignore[attr-defined]
    module.BUILD_USER = "builder@ci"  # type: ignore[attr-defined]
    module.BUILD_DATE = "20261207-10:11:12"  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "sigma_exporter._build", module)
    buildinfo.current.cache_clear()
    yield module
    buildinfo.current.cache_clear()


def test_version_is_prometheus_multi_line_layout(baked: types.ModuleType,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(PROMETHEUS_LAYOUT), lines
    for line, pattern in zip(lines, PROMETHEUS_LAYOUT, strict=True):
        assert re.fullmatch(pattern, line), (line, pattern)
    assert lines[0] == (f"sigma-exporter, version {sigma_exporter.__version__} "
                        f"(revision: {baked.REVISION})")
    assert lines[1].endswith(" builder@ci") and lines[2].endswith(" 20261207-10:11:12")


def test_a_checkout_reports_its_git_revision() -> None:
    buildinfo.current.cache_clear()
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
    revision = buildinfo.current().revision
    assert revision in (head, head + "-dirty")
    # Unknown build user and date are left out, not made up.
    assert "build user" not in buildinfo.version_text()


def test_a_copy_outside_any_checkout_says_unknown(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "sigma_exporter", tmp_path / "sigma_exporter",
                    ignore=shutil.ignore_patterns("__pycache__", "_build.py"))
    result = subprocess.run(
        [sys.executable, "-c", "from sigma_exporter import buildinfo; "
         "print(buildinfo.current().revision)"],
        capture_output=True, text=True, timeout=60, check=True, cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tmp_path)})
    assert result.stdout.strip() == "unknown"


@dataclass
class _EmptyFleet:
    view: View


def test_build_info_carries_the_revision_and_the_process_families_are_served(
        baked: types.ModuleType) -> None:
    view = View.of(1, [], ready=True, reload=ConfigReload())
    exporter = Exporter(_EmptyFleet(view))
    try:
        body = exporter.metrics_body(openmetrics=False, gzip=False).decode()
    finally:
        exporter.close()
    families = {f.name: f for f in text_string_to_metric_families(body)}
    (info,) = families["sigma_exporter_build_info"].samples
    assert info.labels["version"] == sigma_exporter.__version__
    assert info.labels["revision"] == baked.REVISION
    assert info.labels["python_version"] == ".".join(map(str, sys.version_info[:3]))
    # prometheus_client's own process families, after the targets'.
    assert "python_gc_objects_collected" in families
    (python,) = families["python_info"].samples
    assert python.labels["implementation"] == "CPython"
    assert "process_cpu_seconds" in families
