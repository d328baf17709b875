"""The simulator's GPU modes from the command line (scenario; mirror needs NVML)."""

from __future__ import annotations

from pathlib import Path

import httpx
from conftest import FIXTURES, Proc, sigma_exporter_cmd, wait_until
from stack import Simulator


def test_gpu_scenario_flag_drives_reported_figures(tmp_path: Path) -> None:
    sim = Simulator(tmp_path, 1, "--gpu-scenario", str(FIXTURES / "scenarios" / "one-a10.yml"))
    try:
        dump = wait_until(lambda: httpx.get(sim.urls[0], timeout=5, trust_env=False).json(),
                          20, "simulator up")
        gpu = dump["System"]["gpu"][0]
        assert gpu["name"] == "NVIDIA A10" and gpu["total"] == 22731
        assert gpu["used"] in (4096, 4200) and gpu["enc"] in (55, 58)
    finally:
        sim.stop()


def test_gpu_scenario_errors_exit_2(tmp_path: object) -> None:
    result = Proc(sigma_exporter_cmd("simulate", "--listen", "127.0.0.1:0",
                                     "--gpu-scenario", "/nonexistent.yml"))
    code, _, err = result.stop_after_exit()
    assert code == 2 and "--gpu-scenario" in err


def test_gpu_mirror_without_nvml_exits_2() -> None:
    result = Proc(sigma_exporter_cmd("simulate", "--listen", "127.0.0.1:0", "--gpu-mirror"))
    code, _, err = result.stop_after_exit()
    assert code == 2 and "NVML" in err
