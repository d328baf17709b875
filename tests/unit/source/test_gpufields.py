"""The one table of GPU figures (sigma_exporter.source.gpufields) and what reads it."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from sigma_exporter.agent.crosscheck import CrossCheck, Result, Tolerances
from sigma_exporter.agent.nvml import MIB, GpuReading, nvml_samples
from sigma_exporter.collect.samples import dump_samples
from sigma_exporter.config import DEFAULT_TOLERANCES
from sigma_exporter.metrics import BY_NAME
from sigma_exporter.source.gpufields import GPU_FIELDS, GpuField
from sigma_exporter.source.parse import parse_dump
from sigma_exporter.source.snapshot import Gpu

# One Sigma entry with every figure, in Sigma's units, and the same in base units.
SIGMA_ENTRY = {"index": 0, "name": "NVIDIA A10", "total": "22731MB", "used": "4096MB",
               "gpu": "40%", "enc": 55, "dec": "20%", "temp": 50, "count": 3}
BASE_UNITS: dict[str, Any] = {"memory_total_bytes": 22731 * MIB, "memory_used_bytes": 4096 * MIB,
              "utilization_ratio": 0.40, "encoder_utilization_ratio": 0.55,
              "decoder_utilization_ratio": 0.20, "temperature_celsius": 50.0}


def test_every_row_names_real_attributes_metrics_and_tolerances() -> None:
    sigma_attrs = {f.name for f in dataclasses.fields(Gpu)}
    nvml_attrs = {f.name for f in dataclasses.fields(GpuReading)}
    for row in GPU_FIELDS:
        assert row.attr in sigma_attrs and row.attr in nvml_attrs, row.attr
        for metric in (row.sigma_metric, row.nvml_metric):
            assert BY_NAME[metric].labels == ("target", "gpu"), metric
        assert row.tolerance in DEFAULT_TOLERANCES, row.tolerance
    assert set(BASE_UNITS) == {row.attr for row in GPU_FIELDS}
    assert len({row.sigma_key for row in GPU_FIELDS}) == len(GPU_FIELDS)


def test_sigma_entry_becomes_base_units_and_one_series_per_figure() -> None:
    parsed = parse_dump({"System": {"gpu": [SIGMA_ENTRY]}})
    assert not [e for e in parsed.errors if "gpu" in e]  # (no name, version: not GPU's)
    gpu = parsed.value.gpus[0]
    for attr, value in BASE_UNITS.items():
        assert getattr(gpu, attr) == pytest.approx(value), attr
    # Figures of the table are not repeated as "reported" values; the rest are.
    assert gpu.reported == (("count", 3.0),)
    samples = dump_samples("t", parsed.value, received_at=0.0)
    for row in GPU_FIELDS:
        [(labels, value)] = samples[row.sigma_metric]
        assert labels == ("t", "0") and value == pytest.approx(BASE_UNITS[row.attr])


def test_nvml_reading_gives_one_series_per_figure() -> None:
    samples = nvml_samples("t", (GpuReading(index=0, **BASE_UNITS),))
    for row in GPU_FIELDS:
        assert samples[row.nvml_metric] == [(("t", "0"), BASE_UNITS[row.attr])]


def _check(row: GpuField, off_by: float) -> Result:
    """The cross-check after a full window of Sigma off by `off_by` on one figure."""
    nvml = GpuReading(index=0, **BASE_UNITS)
    sigma = Gpu(index="0", **{**BASE_UNITS, row.attr: BASE_UNITS[row.attr] + off_by})
    check = CrossCheck(Tolerances(), window=2)
    first = check.update([sigma], [nvml])
    if row.windowed:  # no verdict before the window is full
        assert ("0", row.crosscheck) not in {(g, f) for g, f, _ in first.mismatches}
    return check.update([sigma], [nvml])


@pytest.mark.parametrize("row", GPU_FIELDS, ids=lambda row: row.crosscheck)
def test_crosscheck_judges_each_figure_by_its_tolerance(row: GpuField) -> None:
    """Off by twice its tolerance, that figure and only it mismatches; by half, none does."""
    tolerance = DEFAULT_TOLERANCES[row.tolerance]
    if row.crosscheck == "memory_used":  # the relative slack is the larger one here
        tolerance = DEFAULT_TOLERANCES["memory_used_ratio"] * BASE_UNITS["memory_total_bytes"]
    beyond = _check(row, 2 * tolerance)
    assert beyond.mismatched() == {("0", row.crosscheck)}
    differences = {(gpu, field): value for gpu, field, value in beyond.differences}
    assert differences[("0", row.crosscheck)] == pytest.approx(2 * tolerance)
    assert _check(row, tolerance / 2).mismatched() == set()
