"""The numbers the alerts fire at, read from alerts/thresholds.yml.

The alert rules and the dashboards share that file so that a panel turns red
exactly where its alert fires; tests/ops/test_dashboards.py checks every such
panel against the file. Keys the dashboards do not colour by (swap growth,
error bursts, ...) are left to the rules.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import yaml

THRESHOLDS_FILE = Path(__file__).resolve().parents[2] / "alerts" / "thresholds.yml"


@dataclass(frozen=True)
class Thresholds:
    """The keys of alerts/thresholds.yml that a panel colours by (same names, same units)."""

    clock_skew_seconds: float
    host_memory_utilization_ratio: float
    gpu_temperature_celsius: float
    gpu_encoder_utilization_ratio: float
    gpu_decoder_utilization_ratio: float
    gpu_memory_utilization_ratio: float
    job_speed_ratio: float


def load(path: Path = THRESHOLDS_FILE) -> Thresholds:
    """Read the thresholds; a missing or non-numeric key is an error, never a default."""
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    values: dict[str, float] = {}
    for f in fields(Thresholds):
        value = doc.get(f.name) if isinstance(doc, dict) else None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{path}: {f.name} must be a number, got {value!r}")
        values[f.name] = value
    return Thresholds(**values)
