"""Configuration mistakes as the command line reports them: exit code 2 and the fix.

The messages themselves are checked in-process by tests/unit/test_config.py;
these run `sigma-exporter` as a process, for the exit codes and stderr.
"""

from __future__ import annotations

import subprocess

from conftest import FIXTURES, sigma_exporter_cmd

CONFIGS = FIXTURES / "config"


def test_cli_exits_2_naming_file_key_and_fix() -> None:
    path = CONFIGS / "bad-method.yml"
    result = subprocess.run(sigma_exporter_cmd("--config.file", str(path)),
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert str(path) in result.stderr and "targets[0].method" in result.stderr
    assert "Fix:" in result.stderr


def test_check_config_ok_and_bad() -> None:
    ok = subprocess.run(sigma_exporter_cmd("check-config", str(CONFIGS / "valid.yml")),
                        capture_output=True, text=True, timeout=60, check=False)
    assert ok.returncode == 0, ok.stderr
    assert "2 target(s)" in ok.stdout and "sigma-02" in ok.stdout
    bad = subprocess.run(sigma_exporter_cmd("check-config", str(CONFIGS / "bad-interval.yml")),
                         capture_output=True, text=True, timeout=60, check=False)
    assert bad.returncode == 2 and "targets[0].interval" in bad.stderr


def test_no_target_at_all_explains_the_demo() -> None:
    result = subprocess.run(sigma_exporter_cmd(), capture_output=True, text=True, timeout=60,
                            check=False, env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 2
    assert "--config.file" in result.stderr and "demo" in result.stderr


def test_bad_flag_values_exit_2() -> None:
    for flags, key in ((["--log.level", "loud"], "--log.level"),
                       (["--log.format", "xml"], "--log.format"),
                       (["--web.listen-address", "nowhere"], "--web.listen-address")):
        result = subprocess.run(
            sigma_exporter_cmd("--target", "http://127.0.0.1:1", *flags),
            capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 2, (flags, result.stderr)
        assert key in result.stderr
