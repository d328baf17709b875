"""The GPU figures Sigma reports and the NVIDIA driver also reads: one row each.

Sigma's `System.gpu[]` entry and an NVML reading both carry these figures.
A row names everything that depends on the figure: Sigma's key and how its
text becomes a base unit (the parser), the attribute on both snapshots
(snapshot.Gpu, nvml.GpuReading), the metric of each side, and how the
cross-check compares the two. Identity fields (index, name) are not figures
and are handled where they are used.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sigma_exporter.source import units


@dataclass(frozen=True, slots=True)
class GpuField:
    attr: str  # attribute of snapshot.Gpu and of nvml.GpuReading, in base units
    sigma_key: str  # key in Sigma's System.gpu[] entry
    convert: Callable[[object], float | None]  # Sigma's value -> base unit
    sigma_metric: str
    nvml_metric: str
    crosscheck: str  # `field` label of the sigma_gpu_crosscheck_* series
    tolerance: str  # key of nvml.tolerances (config.DEFAULT_TOLERANCES) bounding it
    # Judged on the median of a window: the two sides sample at different instants.
    windowed: bool


GPU_FIELDS: tuple[GpuField, ...] = (
    GpuField("memory_total_bytes", "total", units.size_bytes,
             "sigma_gpu_memory_total_bytes", "sigma_nvml_gpu_memory_total_bytes",
             "memory_total", "memory_total_bytes", windowed=False),
    GpuField("memory_used_bytes", "used", units.size_bytes,
             "sigma_gpu_memory_used_bytes", "sigma_nvml_gpu_memory_used_bytes",
             "memory_used", "memory_used_bytes", windowed=False),
    GpuField("utilization_ratio", "gpu", units.percent_ratio,
             "sigma_gpu_utilization_ratio", "sigma_nvml_gpu_utilization_ratio",
             "utilization", "utilization", windowed=True),
    GpuField("encoder_utilization_ratio", "enc", units.percent_ratio,
             "sigma_gpu_encoder_utilization_ratio", "sigma_nvml_gpu_encoder_utilization_ratio",
             "encoder", "utilization", windowed=True),
    GpuField("decoder_utilization_ratio", "dec", units.percent_ratio,
             "sigma_gpu_decoder_utilization_ratio", "sigma_nvml_gpu_decoder_utilization_ratio",
             "decoder", "utilization", windowed=True),
    GpuField("temperature_celsius", "temp", units.number,
             "sigma_gpu_temperature_celsius", "sigma_nvml_gpu_temperature_celsius",
             "temperature", "temperature", windowed=True),
)

BY_CROSSCHECK: dict[str, GpuField] = {f.crosscheck: f for f in GPU_FIELDS}
