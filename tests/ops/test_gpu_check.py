"""scripts/gpu-check runs on real GPUs only when one is lent; its dry run keeps it working."""

from __future__ import annotations

import subprocess
import sys

from conftest import FIXTURES, ROOT


def test_gpu_check_dry_run_with_fake_nvml() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gpu-check"), "--fake-scenario",
         str(FIXTURES / "scenarios" / "one-a10.yml")],
        capture_output=True, text=True, timeout=180, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "PASS: dry run" in result.stdout
    assert "[FAIL]" not in result.stdout
