"""Fault matrix: three healthy servers and one faulty one behind one exporter.

tests/e2e/test_e2e.py breaks one of three servers per fault and checks the report.
This goes further: four targets, the healthy three must keep exactly their
series and stay fresh while the fourth fails each way in turn, the exporter
must recover from every fault, and a hundred back-to-back fault cycles must
not leak file descriptors.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import httpx
import pytest
from conftest import Proc, free_port, free_ports, get, sigma_exporter_cmd, value, wait_until
from conftest import samples as parse_samples
from test_e2e import EXPECTED

pytestmark = pytest.mark.e2e

HEALTHY = ("ok-1", "ok-2", "ok-3")
FAULTY = "bad"
FAULTY_INDEX = 3
CYCLES = 100
FD_SLACK = 8


class Matrix:
    def __init__(self, sim: Proc, exporter: Proc, control: str, base: str) -> None:
        self.sim, self.exporter, self.control, self.base = sim, exporter, control, base

    def metrics(self) -> str:
        response = get(self.base + "/metrics")
        response.raise_for_status()
        return response.text

    def set_fault(self, mode: str) -> None:
        httpx.post(f"{self.control}/servers/{FAULTY_INDEX}/fault", params={"mode": mode},
                   timeout=5, trust_env=False).raise_for_status()

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.exporter.proc.pid}/fd"))


@pytest.fixture(scope="module")
def matrix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Matrix]:
    first = free_ports(4)
    control_port = free_port()
    sim = Proc(sigma_exporter_cmd("simulate", "--listen", f"127.0.0.1:{first}", "--servers",
                                  "4", "--control", f"127.0.0.1:{control_port}"))
    config = tmp_path_factory.mktemp("matrix") / "sigma.yml"
    names = (*HEALTHY, FAULTY)
    # A small body cap on the faulty target: `huge` is refused fast even on a busy CI box.
    config.write_text("defaults:\n  interval: 500ms\n  timeout: 400ms\ntargets:\n" + "".join(
        f"  - name: {name}\n    url: http://127.0.0.1:{first + i}\n"
        + ("    max_body_bytes: 1MiB\n" if name == FAULTY else "")
        for i, name in enumerate(names)))
    port = free_port()
    # Errors only: hundreds of failed polls must not fill the stderr pipe nobody reads.
    exporter = Proc(sigma_exporter_cmd("--config.file", str(config), "--web.listen-address",
                                       f"127.0.0.1:{port}", "--log.level", "error"))
    m = Matrix(sim, exporter, f"http://127.0.0.1:{control_port}", f"http://127.0.0.1:{port}")
    try:
        wait_until(lambda: all(value(m.metrics(), "sigma_progress_up", target=n) == 1
                               for n in names), 30, "all targets up")
        yield m
    finally:
        exporter.stop()
        sim.stop()


def series_of(body: str, target: str) -> set[tuple[str, frozenset[tuple[str, str]]]]:
    """The series of one target, without the ones whose labels are values in time."""
    volatile = {"sigma_poll_errors_total", "sigma_parse_errors_total", "sigma_job_errors_total",
                "sigma_poll_duration_seconds"}
    return {(name, labels) for (name, labels) in parse_samples(body)
            if ("target", target) in labels and name not in volatile}


def _errors(body: str, source: str | None = None, reason: str | None = None) -> float:
    total = 0.0
    for (name, labels), v in parse_samples(body).items():
        found = dict(labels)
        if name == "sigma_poll_errors_total" and found.get("target") == FAULTY and \
                (source is None or found["source"] == source) and \
                (reason is None or found["reason"] == reason):
            total += v
    return total


def _recovered(m: Matrix) -> bool:
    body = m.metrics()
    return value(body, "sigma_up", target=FAULTY) == 1 and \
        value(body, "sigma_progress_up", target=FAULTY) == 1


@pytest.mark.parametrize("fault", sorted(EXPECTED))
def test_fault_leaves_healthy_targets_untouched(matrix: Matrix, fault: str) -> None:
    source, reason = EXPECTED[fault]
    body = matrix.metrics()
    before = {n: series_of(body, n) for n in HEALTHY}
    since = {n: value(body, "sigma_last_poll_success_timestamp_seconds", target=n) or 0
             for n in HEALTHY}
    errors_before = _errors(body, source, reason)
    matrix.set_fault(fault)
    try:
        body = wait_until(lambda: (b := matrix.metrics()) and _errors(b, source, reason)
                          > errors_before and b, 30, f"{fault} reported as {reason}")
        if source == "dump" and fault != "flap":
            body = wait_until(lambda: (b := matrix.metrics()) and
                              value(b, "sigma_up", target=FAULTY) == 0 and b, 10, "down")
            # Its data series went away with the failed poll; health series stay.
            assert value(body, "sigma_host_memory_used_bytes", target=FAULTY) is None
            assert value(body, "sigma_poll_interval_seconds", target=FAULTY) == 0.5
        # Healthy targets: still up, polled again since, and exactly the same series.
        why: list[str] = []  # what kept the last check from passing (for the failure)

        def healthy_fresh() -> bool:
            current = matrix.metrics()
            why.clear()
            for n in HEALTHY:
                if value(current, "sigma_up", target=n) != 1:
                    why.append(f"{n} not up")
                if (value(current, "sigma_last_poll_success_timestamp_seconds", target=n)
                        or 0) <= since[n]:
                    why.append(f"{n} not polled again")
                series = series_of(current, n)
                if series != before[n]:
                    why.append(f"{n} series changed: +{sorted(series - before[n])[:3]} "
                               f"-{sorted(before[n] - series)[:3]}")
            return not why

        try:
            wait_until(healthy_fresh, 10, "healthy targets fresh and unchanged")
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {why}") from None
    finally:
        matrix.set_fault("none")
    wait_until(lambda: _recovered(matrix), 30, f"recovery from {fault}")
    assert matrix.exporter.proc.poll() is None, "the exporter must not crash"


def test_no_fd_growth_over_a_hundred_fault_cycles(matrix: Matrix) -> None:
    faults = sorted(EXPECTED)
    wait_until(lambda: _recovered(matrix), 30, "start healthy")
    baseline = matrix.fds()
    try:
        for cycle in range(CYCLES):
            fault = faults[cycle % len(faults)]
            before = _errors(matrix.metrics())
            matrix.set_fault(fault)
            wait_until(lambda: _errors(matrix.metrics()) > before, 30,  # noqa: B023
                       f"cycle {cycle}: {fault} seen")
    finally:
        matrix.set_fault("none")
    wait_until(lambda: _recovered(matrix), 30, "recovery after the cycles")
    # Connections of the last faults close within a poll or two.
    wait_until(lambda: matrix.fds() <= baseline + FD_SLACK, 20,
               f"fds back near {baseline} (now {matrix.fds()})")
    body = matrix.metrics()
    assert all(value(body, "sigma_up", target=n) == 1 for n in HEALTHY)
    assert matrix.exporter.proc.poll() is None


def test_exporter_log_has_no_traceback(matrix: Matrix) -> None:
    code, _, err = matrix.exporter.stop()
    assert code == 0, err[-2000:]
    assert "Traceback" not in err, err[-4000:]
