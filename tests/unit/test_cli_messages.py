"""The messages a user reads from the command line, word for word where it matters.

In-process (`cli.main` with the output captured): the papercuts an operator met on the
way from the demo to a fleet, each as the user sees it: `check-config` taking the file
as `once` and the exporter do, a flag named once in its error, `--help` without
`(default: None)`, `once` naming every failed source and ending with a verdict.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import free_port, value
from sigma_stub import Stub, sigma_answer

from sigma_exporter import cli


@pytest.fixture(autouse=True)
def _keep_logging() -> Iterator[None]:
    """`once` sets up logging as the process does; put the root logger back after."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def main(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = cli.main(list(argv))
    except SystemExit as exit_:  # argparse's own errors and --help
        code = int(exit_.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_check_config_takes_the_file_as_once_does(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "sigma.yml"
    config.write_text("targets:\n  - name: edge\n    url: http://127.0.0.1:9\n"
                      "nvml:\n  enabled: false\n")
    for argv in (("check-config", str(config)), ("check-config", "--config.file", str(config))):
        code, out, err = main(capsys, *argv)
        assert code == 0, err
        assert out.startswith(f"{config}: OK, 1 target(s)\n")
    code, _, err = main(capsys, "check-config")
    assert code == 2 and "give the config file once" in err


def test_check_config_lists_the_outputs_roots_each_hosts_file_resolves(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """One file for every host: a root's `target` and `url` take `${HOSTNAME}` as the
    target's name does, and check-config says where each root is read and for whom."""
    monkeypatch.setenv("HOSTNAME", "edge-07")
    config = tmp_path / "sigma.yml"
    config.write_text(
        "targets:\n  - name: ${HOSTNAME}\n    url: http://127.0.0.1:9\n"
        "  - name: spare\n    url: http://127.0.0.1:10\n"
        "nvml:\n  enabled: false\n"
        "outputs:\n  roots:\n    - path: /mnt/ramdisk\n      target: ${HOSTNAME}\n"
        "    - path: /mnt/origin\n      target: spare\n"
        "      url: http://${HOSTNAME}:8080/\n")
    code, out, err = main(capsys, "check-config", str(config))
    assert code == 0, err
    assert "  outputs root /mnt/ramdisk: read on this host, for edge-07\n" in out
    assert "  outputs root /mnt/origin: fetched from http://edge-07:8080/, for spare\n" in out


def test_a_missing_file_names_how_it_was_given(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.yml"
    code, _, err = main(capsys, "check-config", str(missing))
    assert code == 2
    assert err == (f"sigma-exporter: invalid configuration: {missing}: (file): cannot read the "
                   "file: No such file or directory. Fix: check the path given to "
                   "check-config\n")
    code, _, err = main(capsys, "check-config", "--config.file", str(missing))
    assert code == 2 and err.endswith("Fix: check the path given to --config.file\n")


def test_a_flag_is_named_once_in_its_error(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = main(capsys, "--config.file", str(tmp_path / "x.yml"),
                        "--target", "http://127.0.0.1:9")
    assert code == 2
    assert err == ("sigma-exporter: invalid configuration: --target: given together with "
                   "--config.file. Fix: list the servers in the config file, or use --target "
                   "alone\n")
    code, _, err = main(capsys, "--target", "ftp://x")
    assert code == 2 and "--target: --target" not in err
    assert err.startswith("sigma-exporter: invalid configuration: --target: 'ftp://x' is not")


@pytest.mark.parametrize("command", [(), ("check-config",), ("once",), ("simulate",),
                                     ("demo",)])
def test_help_names_each_default_once_and_never_none(
        command: tuple[str, ...], capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "300")  # one option per line
    for name in list(os.environ):
        if name.startswith("SIGMA_EXPORTER_"):
            monkeypatch.delenv(name)
    code, out, _ = main(capsys, *command, "--help")
    assert code == 0
    for nothing in ("(default: None)", "(default: False)", "(default: [])"):
        assert nothing not in out
    for line in out.splitlines():
        assert line.count("default") <= 1, line
    if command == ("once",):
        assert "(default: the target's timeout, else 5s)" in out
    if command == ():
        assert "(default :19911;" in out and "(default: logfmt)" in out


def test_once_against_a_dead_server_names_both_sources_and_ends_with_a_verdict(
        capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    code, out, err = main(capsys, "once", "--target", url)
    assert code == 1
    assert value(out, "sigma_up") == 0  # the exposition still comes, on stdout
    verdict = err.strip().splitlines()[-1]
    name = url.removeprefix("http://")
    assert verdict.startswith(f"sigma-exporter once: {name} DOWN: dump FAILED: connect: ")
    assert "; progress FAILED: connect: " in verdict
    assert "Traceback" not in err


def test_once_on_a_healthy_server_says_so_in_one_line(
        capsys: pytest.CaptureFixture[str]) -> None:
    stub = Stub(sigma_answer)
    try:
        code, out, err = main(capsys, "once", "--target", stub.url)
    finally:
        stub.stop()
    assert code == 0, err
    assert value(out, "sigma_up") == 1 and "sigma-exporter once" not in out
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    name = stub.url.removeprefix("http://")
    assert lines[0].startswith(f"sigma-exporter once: {name} UP: dump ok in ")
    assert " ms; progress ok: " in lines[0] and " channels, " in lines[0]
    assert lines[0].endswith((" GPU", " GPUs"))
