"""Snapshots to samples: one fresh set of families per target per poll.

Each function maps part of a target's latest state to `Samples`: metric name
-> list of (label values in the definition's order, value). Nothing here is
long-lived: the poller calls these after each poll and the renderer turns the
result into exposition bytes. A value we did not get yields no sample.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping

from sigma_exporter.collect.counters import ErrorLineCounter
from sigma_exporter.source import jobstates
from sigma_exporter.source.errorcodes import CLASSES_AND_UNKNOWN
from sigma_exporter.source.gpufields import GPU_FIELDS
from sigma_exporter.source.snapshot import Dump, ProcessStats, Progress
from sigma_exporter.source.units import wall_to_timestamp

Labels = tuple[str, ...]
Samples = dict[str, list[tuple[Labels, float]]]

UP_STATES_APP = frozenset({"running"})
UP_STATES_JOB = jobstates.UP_STATES  # what each job state means: source/jobstates.py


def new_samples() -> Samples:
    return defaultdict(list)


def _add(samples: Samples, name: str, labels: Labels, value: float | None) -> None:
    if value is not None:
        samples[name].append((labels, value))


def _process(out: Samples, prefix: str, labels: Labels, proc: ProcessStats | None) -> None:
    if proc is None:
        return
    _add(out, f"{prefix}_cpu_ratio", labels, proc.cpu_ratio)
    _add(out, f"{prefix}_resident_memory_bytes", labels, proc.resident_memory_bytes)
    _add(out, f"{prefix}_children", labels, proc.children)


def dump_samples(
    target: str,
    dump: Dump,
    received_at: float,
    app_restarts: Mapping[str, int] | None = None,
) -> Samples:
    """Samples of a dump answer that arrived at `received_at` (exporter clock)."""
    out = new_samples()
    t = (target,)
    _add(out, "sigma_server_info", (target, dump.name or "", dump.version or "",
                                    dump.branch or "", dump.hostname or "",
                                    dump.timezone or ""), 1.0)
    _add(out, "sigma_server_build_timestamp_seconds", t, dump.build_timestamp)
    _add(out, "sigma_server_start_timestamp_seconds", t, dump.start_timestamp)
    server_clock = dump.local_timestamp if dump.local_timestamp is not None \
        else dump.answer_timestamp
    if server_clock is not None:
        _add(out, "sigma_server_clock_skew_seconds", t, server_clock - received_at)
    _add(out, "sigma_server_speed", t, dump.speed)
    _add(out, "sigma_server_port", t, dump.port)
    _add(out, "sigma_jobs_queued", t, dump.jobs_queued)
    _add(out, "sigma_jobs", t, dump.jobs_total)
    for state, count in dump.tasks:
        _add(out, "sigma_tasks", (target, state), count)
    for codec in dump.codecs:
        _add(out, "sigma_codec_info", (target, codec.device, codec.direction, codec.codec), 1.0)
    if dump.license_status is not None:
        _add(out, "sigma_license_status", (target, dump.license_status), 1.0)
    if dump.control_plane_connected is not None:
        _add(out, "sigma_control_plane_connected", t,
             1.0 if dump.control_plane_connected else 0.0)
    _add(out, "sigma_control_plane_connect_timestamp_seconds", t,
         dump.control_plane_connect_timestamp)
    for path, value in dump.reported:
        _add(out, "sigma_server_reported_value", (target, path), value)
    if dump.os is not None:
        _add(out, "sigma_host_info", (target, dump.os), 1.0)
    _add(out, "sigma_host_cpu_cores", t, dump.cpu_cores)
    _add(out, "sigma_host_cpu_utilization_ratio", t, dump.cpu_utilization_ratio)
    _add(out, "sigma_server_threads", t, dump.threads)
    _add(out, "sigma_host_memory_total_bytes", t, dump.memory_total_bytes)
    _add(out, "sigma_host_memory_used_bytes", t, dump.memory_used_bytes)
    _add(out, "sigma_host_swap_total_bytes", t, dump.swap_total_bytes)
    _add(out, "sigma_host_swap_used_bytes", t, dump.swap_used_bytes)
    _add(out, "sigma_host_stats_timestamp_seconds", t, dump.stats_timestamp)
    for net in dump.networks:
        _add(out, "sigma_host_network_info", (target, net.name, net.address, net.cidr), 1.0)
    for store in dump.storages:
        s = (target, store.name)
        _add(out, "sigma_storage_retention_seconds", s, store.retention_seconds)
        _add(out, "sigma_storage_cleanup_delay_seconds", s, store.cleanup_delay_seconds)
        for folder in store.folders:
            _add(out, "sigma_storage_folder_info", (target, store.name, folder), 1.0)
    if dump.log_used_bytes is not None:
        _add(out, "sigma_log_used_bytes", (target, dump.log_folder or ""), dump.log_used_bytes)
    for gpu in dump.gpus:
        g = (target, gpu.index)
        _add(out, "sigma_gpu_info", (target, gpu.index, gpu.name or ""), 1.0)
        for figure in GPU_FIELDS:
            _add(out, figure.sigma_metric, g, getattr(gpu, figure.attr))
        for key, value in gpu.reported:
            _add(out, "sigma_gpu_reported_value", (target, gpu.index, key), value)
    _process(out, "sigma_process", t, dump.process)
    restarts = app_restarts or {}
    for app in dump.apps:
        a = (target, app.name)
        if app.state is not None:
            _add(out, "sigma_app_up", a, 1.0 if app.state in UP_STATES_APP else 0.0)
            _add(out, "sigma_app_state", (target, app.name, app.state), 1.0)
        _add(out, "sigma_app_uptime_seconds", a, app.uptime_seconds)
        _process(out, "sigma_app", a, app.process)
        _add(out, "sigma_app_restarts_total", a, float(restarts.get(app.name, 0)))
    return out


def progress_samples(
    target: str,
    progress: Progress,
    wall_zone: str | None,
    dropped: int,
    error_counters: Mapping[str, ErrorLineCounter] | None = None,
    job_restarts: Mapping[str, int] | None = None,
) -> Samples:
    """Samples of the (already filtered) jobs of a progress answer.

    `wall_zone` is the zone the answer's zone-less wall times are read in
    (units.wall_clock_zone); None: they give no timestamp.
    """
    out = new_samples()
    _add(out, "sigma_jobs_dropped", (target,), float(dropped))
    counters = error_counters or {}
    restarts = job_restarts or {}
    for job in progress.jobs:
        j = (target, job.name)
        if job.state is not None:
            _add(out, "sigma_job_up", j, 1.0 if job.state in UP_STATES_JOB else 0.0)
            _add(out, "sigma_job_state", (target, job.name, job.state), 1.0)
        _add(out, "sigma_job_speed", j, job.speed)
        _add(out, "sigma_job_uptime_seconds", j, job.uptime_seconds)
        _add(out, "sigma_job_media_time_seconds", j, job.media_time_seconds)
        if job.startup_wall is not None:
            _add(out, "sigma_job_start_timestamp_seconds", j,
                 wall_to_timestamp(job.startup_wall, wall_zone))
        for entry in job.inputs:
            i = (target, job.name, entry.index)
            _add(out, "sigma_job_input_bytes_per_second", i, entry.bytes_per_second)
            if entry.url is not None:
                _add(out, "sigma_job_input_info", (*i, entry.url), 1.0)
        for profile in job.profiles:
            _add(out, "sigma_job_profile_bytes_per_second", (target, job.name, profile.id),
                 profile.bytes_per_second)
        for output in job.outputs:
            _add(out, "sigma_job_output_bytes_per_second",
                 (target, job.name, output.index, output.format), output.bytes_per_second)
        if job.errors is not None:
            _add(out, "sigma_job_errors_listed", j, float(len(job.errors)))
        counter = counters.get(job.name)
        if counter is not None:
            for code, count in sorted(counter.by_code.items()):
                _add(out, "sigma_job_errors_total", (target, job.name, code), float(count))
            for error_class in CLASSES_AND_UNKNOWN:
                _add(out, "sigma_job_errors_by_class_total", (target, job.name, error_class),
                     float(counter.by_class[error_class]))
        _add(out, "sigma_job_weight", j, job.weight)
        if job.name in restarts:
            _add(out, "sigma_job_restarts_total", j, float(restarts[job.name]))
    return out


def merge(parts: Iterable[Samples]) -> Samples:
    out = new_samples()
    for part in parts:
        for name, samples in part.items():
            out[name].extend(samples)
    return out
