"""Every metric the exporter can emit, declared once.

The sources, the renderer and docs/metrics.md all read this table, so a
name, type, label set or HELP text lives in exactly one place. A target's
data and health families are rendered together once per poll; the health
families (kept in the target's health, collect/health.py) are rendered again
when a poll fails, so they survive it, and the data families do not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# `info`: a family of `*_info` series whose value is 1 and whose labels are the
# information. OpenMetrics has a type for it; the text format calls it a gauge.
MetricType = Literal["gauge", "counter", "info"]
# Which part of the exporter produces the family:
#   health  - per-target poll health, kept across failed polls
#   dump    - from the server's `dump` answer
#   progress- from the `progress` answer (per job)
#   nvml    - from the local NVIDIA driver (agent mode)
#   outputs - from the HLS/DASH playlists the jobs write (on disk or at the origin)
#   self    - the exporter itself
Source = Literal["health", "dump", "progress", "nvml", "outputs", "self"]


@dataclass(frozen=True, slots=True)
class MetricDef:
    name: str  # full sample name; counters end in _total
    type: MetricType
    help: str
    labels: tuple[str, ...]
    source: Source

    @property
    def family(self) -> str:
        """The family name as OpenMetrics spells it (counters lose `_total`, infos `_info`)."""
        if self.type == "counter":
            return self.name.removesuffix("_total")
        if self.type == "info":
            return self.name.removesuffix("_info")
        return self.name

    @property
    def text_type(self) -> str:
        """The type in the Prometheus text format 0.0.4, which has no `info`."""
        return "gauge" if self.type == "info" else self.type

    @property
    def unit(self) -> str:
        """The OpenMetrics `# UNIT` of the family: the base-unit suffix of its name, if any.

        Derived from the name, so the two cannot disagree (OpenMetrics requires
        the family name to end in its unit).
        """
        for unit in UNITS:
            if self.family.endswith("_" + unit):
                return unit
        return ""


# Units the names end in, longest first (`bytes_per_second` before `seconds`).
UNITS = ("bytes_per_second", "seconds", "bytes", "ratio", "celsius", "watts", "hz")


_CACHED = " Cached from the last successful poll."


def _d(
    name: str, type_: MetricType, help_: str, labels: tuple[str, ...], source: Source
) -> MetricDef:
    if source in ("dump", "progress", "nvml", "outputs"):
        help_ += _CACHED
    return MetricDef(name, type_, help_, labels, source)


T = ("target",)
G = ("target", "gpu")
A = ("target", "app")
J = ("target", "job_name")
JO = ("target", "job_name", "output")
JR = ("target", "job_name", "output", "rendition")

DEFINITIONS: tuple[MetricDef, ...] = (
    # --- self ---------------------------------------------------------------
    _d("sigma_exporter_build_info", "info",
       "Version of sigma-exporter, the git revision it was built from and the Python it "
       "runs on; value is 1.",
       ("version", "revision", "python_version"), "self"),
    _d("sigma_targets", "gauge", "Number of configured Sigma targets.", (), "self"),
    _d("sigma_config_last_reload_successful", "gauge",
       "Whether the last configuration (re)load succeeded: 1 yes, 0 no.", (), "self"),
    _d("sigma_config_last_reload_success_timestamp_seconds", "gauge",
       "Unix time of the last successful configuration load.", (), "self"),
    # --- health (per target, kept when a poll fails) -------------------------
    _d("sigma_up", "gauge",
       "1 if the last dump poll of the target succeeded, 0 if it failed.", T, "health"),
    _d("sigma_progress_up", "gauge",
       "1 if the last progress (per-job) poll succeeded, 0 if it failed.", T, "health"),
    _d("sigma_poll_interval_seconds", "gauge",
       "Configured poll interval of the target (for staleness alerts).", T, "health"),
    _d("sigma_poll_duration_seconds", "gauge",
       "Wall time of the last read of each source of the target (dump, progress, nvml), "
       "fetch and parse; time spent waiting for another source of the same round is not "
       "counted.", ("target", "source"), "health"),
    _d("sigma_polls_total", "counter",
       "Polls attempted by source (dump, progress, nvml), failed ones included: "
       "the denominator of sigma_poll_errors_total.", ("target", "source"), "health"),
    _d("sigma_poll_errors_total", "counter",
       "Failed polls by source and reason (timeout, connect, tls, http_status, "
       "too_large, protocol, invalid_json, invalid_schema; api_error when Sigma refused the "
       "call, its `ec` not 0; nvml_error for the driver; series_limit; internal for a bug "
       "of the exporter's own). Every source and reason exists at 0 from the start.",
       ("target", "source", "reason"), "health"),
    _d("sigma_last_poll_success_timestamp_seconds", "gauge",
       "Unix time of the last successful dump poll.", T, "health"),
    _d("sigma_parse_errors_total", "counter",
       "Fields present but unparsable (or of the wrong type, or a list cut at 1,024 "
       "entries) in answers, by field path.",
       ("target", "field"), "health"),
    _d("sigma_series_dropped", "gauge",
       "Data series of the target's last poll left out because they exceeded its series "
       "budget (max_series; an estimate from below when the answer was too big to read "
       "in full). 0 when within budget.", T, "health"),
    _d("sigma_server_restarts_total", "counter",
       "Times the server's start time moved since the exporter started (first sight "
       "is not a restart).", T, "health"),
    # --- dump: server ---------------------------------------------------------
    _d("sigma_server_info", "info",
       "Server identity from the dump; value is 1.",
       ("target", "name", "version", "branch", "hostname", "timezone"), "dump"),
    _d("sigma_server_build_timestamp_seconds", "gauge",
       "Build time of the Sigma software (dump `build`).", T, "dump"),
    _d("sigma_server_start_timestamp_seconds", "gauge",
       "Start time of the Sigma server process (dump `start`).", T, "dump"),
    _d("sigma_server_clock_skew_seconds", "gauge",
       "Server clock (dump `local`, else `now`) minus the exporter's clock when the answer "
       "arrived.",
       T, "dump"),
    _d("sigma_server_speed", "gauge",
       "Server speed factor as reported (dump `speed`; undocumented).", T, "dump"),
    _d("sigma_server_port", "gauge", "API port the server reports (dump `port`).", T, "dump"),
    _d("sigma_jobs_queued", "gauge", "Jobs waiting to be started (dump `queue`).", T, "dump"),
    _d("sigma_jobs", "gauge", "Jobs known to the server (dump `total`).", T, "dump"),
    _d("sigma_tasks", "gauge", "Jobs per state (dump `task`).", ("target", "state"), "dump"),
    _d("sigma_codec_info", "info",
       "A codec a device can encode or decode (dump `supported[]`); value is 1.",
       ("target", "device", "direction", "codec"), "dump"),
    # --- dump: licence and control plane (the answer's tail) -------------------
    _d("sigma_license_status", "gauge",
       "State of the server's licence as reported (dump `licenseStatus`, upper case); value "
       "is 1. Only VALID is documented; any other word is carried as reported (letters and "
       "_, at most 32), anything else as `other`. Sigma stops serving when its licence "
       "lapses. The licence key (nats.license) is never read.",
       ("target", "status"), "dump"),
    _d("sigma_control_plane_connected", "gauge",
       "1 while the server's link to Sigma's control plane (NATS) is up, 0 while it is down "
       "(dump nats.connected). Undocumented: the meaning is evident from the answers, "
       "1 in every sample.", T, "dump"),
    _d("sigma_control_plane_connect_timestamp_seconds", "gauge",
       "When the server's control-plane (NATS) link came up (dump nats.startup). "
       "Undocumented: evident from the documented answer, where it is 136 ms after the "
       "server's start; a later value means the link was re-established.", T, "dump"),
    _d("sigma_server_reported_value", "gauge",
       "Undocumented numeric dump fields exactly as Sigma reports them, by path: `dt` "
       "(evidently the server's handling time of the call; unit unknown, 0 in the "
       "documented answer) and `nats.hook` (meaning unknown; 5000 in the documented "
       "answer). No unit is assumed.", ("target", "field"), "dump"),
    # --- dump: host -------------------------------------------------------------
    _d("sigma_host_info", "info", "Host operating system (System.os); value is 1.",
       ("target", "os"), "dump"),
    _d("sigma_host_cpu_cores", "gauge", "CPU cores of the host (System.cores).", T, "dump"),
    _d("sigma_host_cpu_utilization_ratio", "gauge",
       "Host CPU usage, 0-1 (System.cpu percent / 100).", T, "dump"),
    _d("sigma_server_threads", "gauge",
       "Threads of the Sigma server process (System.thread; undocumented).", T, "dump"),
    _d("sigma_host_memory_total_bytes", "gauge", "Host RAM (System.ramTotal, MiB).", T, "dump"),
    _d("sigma_host_memory_used_bytes", "gauge", "Host RAM in use (System.ramUsed, MiB).",
       T, "dump"),
    _d("sigma_host_swap_total_bytes", "gauge", "Host swap (System.swapTotal, MiB).", T, "dump"),
    _d("sigma_host_swap_used_bytes", "gauge", "Host swap in use (System.swapUsed, MiB).",
       T, "dump"),
    _d("sigma_host_stats_timestamp_seconds", "gauge",
       "When the server last refreshed its system figures (System.updateTime).", T, "dump"),
    _d("sigma_host_network_info", "info",
       "A host network interface and its address (System.network[]); value is 1.",
       ("target", "interface", "address", "cidr"), "dump"),
    # --- dump: storage and logs ---------------------------------------------
    _d("sigma_storage_retention_seconds", "gauge",
       "Media retention of a storage (System.Storage[].time).", ("target", "storage"), "dump"),
    _d("sigma_storage_cleanup_delay_seconds", "gauge",
       "Clean-up delay of a storage (System.Storage[].delay).", ("target", "storage"), "dump"),
    _d("sigma_storage_folder_info", "info",
       "A folder of a storage (System.Storage[].folder[]); value is 1.",
       ("target", "storage", "folder"), "dump"),
    _d("sigma_log_used_bytes", "gauge", "Size of the server's log folder (System.log.used, MiB).",
       ("target", "folder"), "dump"),
    # --- dump: GPUs -------------------------------------------------------------
    _d("sigma_gpu_info", "info", "A GPU the server uses (System.gpu[]); value is 1.",
       ("target", "gpu", "name"), "dump"),
    _d("sigma_gpu_memory_total_bytes", "gauge", "GPU memory as Sigma reports it (total, MiB).",
       G, "dump"),
    _d("sigma_gpu_memory_used_bytes", "gauge", "GPU memory in use as Sigma reports it (used, MiB).",
       G, "dump"),
    _d("sigma_gpu_utilization_ratio", "gauge", "GPU core utilisation, 0-1, as Sigma reports it.",
       G, "dump"),
    _d("sigma_gpu_encoder_utilization_ratio", "gauge",
       "NVENC utilisation, 0-1, as Sigma reports it (enc).", G, "dump"),
    _d("sigma_gpu_decoder_utilization_ratio", "gauge",
       "NVDEC utilisation, 0-1, as Sigma reports it (dec).", G, "dump"),
    _d("sigma_gpu_temperature_celsius", "gauge", "GPU temperature as Sigma reports it (temp).",
       G, "dump"),
    _d("sigma_gpu_reported_value", "gauge",
       "Other numeric GPU fields exactly as Sigma reports them (soft, speed, percent, count, "
       "...). Their meaning is undocumented; no unit is assumed.",
       ("target", "gpu", "field"), "dump"),
    # --- dump: server process -------------------------------------------------
    _d("sigma_process_cpu_ratio", "gauge",
       "CPU of the Sigma server process, 1 = one core (System.process.cpu percent / 100).",
       T, "dump"),
    _d("sigma_process_resident_memory_bytes", "gauge",
       "Resident memory of the Sigma server process (System.process.ram).", T, "dump"),
    _d("sigma_process_children", "gauge",
       "Child processes of the Sigma server process (System.process.child).", T, "dump"),
    # --- dump: apps -------------------------------------------------------------
    _d("sigma_app_up", "gauge", "1 if the supervised app's state is running, else 0.", A, "dump"),
    _d("sigma_app_state", "gauge", "State of a supervised app (lower case); value is 1.",
       ("target", "app", "state"), "dump"),
    _d("sigma_app_uptime_seconds", "gauge", "Uptime of a supervised app (Life).", A, "dump"),
    _d("sigma_app_cpu_ratio", "gauge", "CPU of a supervised app, 1 = one core.", A, "dump"),
    _d("sigma_app_resident_memory_bytes", "gauge", "Resident memory of a supervised app.",
       A, "dump"),
    _d("sigma_app_children", "gauge", "Child processes of a supervised app.", A, "dump"),
    _d("sigma_app_restarts_total", "counter",
       "Times an app's uptime went down since the exporter first saw it.", A, "dump"),
    # --- progress: jobs ---------------------------------------------------------
    _d("sigma_jobs_dropped", "gauge",
       "Jobs left out by the include/exclude filters or the per-target max.", T, "progress"),
    _d("sigma_job_up", "gauge",
       "1 while the job runs (state started or running), else 0: starting and preparing "
       "(coming up), error, stop and any other state are 0. The alert rules give a job that "
       "is coming up a grace before it counts as down (sigma:job_down:bool).",
       J, "progress"),
    _d("sigma_job_state", "gauge",
       "State of a job, one series per job; value is 1. Documented: starting, preparing, "
       "started, error, stop (lower case). Any other state is carried as reported, lower "
       "case, at most 32 characters of a-z 0-9 _ . - (others become _).",
       ("target", "job_name", "state"), "progress"),
    _d("sigma_job_speed", "gauge",
       "Processing speed relative to real time (1 = real time; below 1 the channel falls "
       "behind).", J, "progress"),
    _d("sigma_job_uptime_seconds", "gauge", "Uptime of the job (Life).", J, "progress"),
    _d("sigma_job_media_time_seconds", "gauge", "Media time reached by the job (PTS).",
       J, "progress"),
    _d("sigma_job_start_timestamp_seconds", "gauge",
       "When the job started (startup: a wall time without a zone, read in the target's "
       "`timezone`, UTC unless configured; docs/time.md).",
       J, "progress"),
    _d("sigma_job_input_bytes_per_second", "gauge", "Bitrate of a job input (bit/s / 8).",
       ("target", "job_name", "input"), "progress"),
    _d("sigma_job_input_info", "info",
       "URL of a job input, with credentials and query removed; value is 1.",
       ("target", "job_name", "input", "url"), "progress"),
    _d("sigma_job_profile_bytes_per_second", "gauge", "Bitrate of an output profile (bit/s / 8).",
       ("target", "job_name", "profile"), "progress"),
    _d("sigma_job_output_bytes_per_second", "gauge", "Bitrate of a job output (bit/s / 8).",
       ("target", "job_name", "output", "format"), "progress"),
    _d("sigma_job_errors_listed", "gauge", "Error lines the server currently lists for the job.",
       J, "progress"),
    _d("sigma_job_errors_total", "counter",
       "Distinct error lines seen for the job, by code (unknown when the line has none). "
       "Each line counts once, when first seen.", ("target", "job_name", "code"), "progress"),
    _d("sigma_job_errors_by_class_total", "counter",
       "Distinct error lines seen for the job, by the documented class of their code: input "
       "(the feed), output (CDN, origin, disk, network), processing (the Sigma host), config "
       "(the job's settings); unknown for a code Sigma does not document or a line without "
       "one. A code in two classes (IO_ERROR: input and output) counts in both, so the "
       "classes may sum to more than the lines. Every class exists at 0 from the first poll.",
       ("target", "job_name", "class"), "progress"),
    _d("sigma_job_weight", "gauge", "Weight of the job as reported.", J, "progress"),
    _d("sigma_job_restarts_total", "counter",
       "Times a job's uptime (Life) went down since the exporter first saw it.", J, "progress"),
    # --- nvml: the local driver's view (agent mode) ---------------------------
    _d("sigma_nvml_up", "gauge", "1 if NVML answered in the last round, else 0.", T, "health"),
    _d("sigma_nvml_gpu_info", "info", "A GPU the NVIDIA driver sees; value is 1.",
       ("target", "gpu", "uuid", "name", "pci_bus_id"), "nvml"),
    _d("sigma_nvml_gpu_memory_total_bytes", "gauge", "GPU memory total per NVML.", G, "nvml"),
    _d("sigma_nvml_gpu_memory_used_bytes", "gauge", "GPU memory used per NVML.", G, "nvml"),
    _d("sigma_nvml_gpu_utilization_ratio", "gauge", "GPU core utilisation per NVML, 0-1.",
       G, "nvml"),
    _d("sigma_nvml_gpu_memory_utilization_ratio", "gauge",
       "GPU memory controller utilisation per NVML, 0-1.", G, "nvml"),
    _d("sigma_nvml_gpu_encoder_utilization_ratio", "gauge", "NVENC utilisation per NVML, 0-1.",
       G, "nvml"),
    _d("sigma_nvml_gpu_decoder_utilization_ratio", "gauge", "NVDEC utilisation per NVML, 0-1.",
       G, "nvml"),
    _d("sigma_nvml_gpu_encoder_sessions", "gauge", "Active NVENC sessions per NVML.", G, "nvml"),
    _d("sigma_nvml_gpu_encoder_fps", "gauge", "Average NVENC frames per second per NVML.",
       G, "nvml"),
    _d("sigma_nvml_gpu_encoder_latency_seconds", "gauge", "Average NVENC latency per NVML.",
       G, "nvml"),
    _d("sigma_nvml_gpu_temperature_celsius", "gauge", "GPU temperature per NVML.", G, "nvml"),
    _d("sigma_nvml_gpu_power_watts", "gauge", "GPU power draw per NVML.", G, "nvml"),
    _d("sigma_nvml_gpu_video_clock_hz", "gauge", "GPU video clock per NVML.", G, "nvml"),
    _d("sigma_nvml_gpu_power_limit_watts", "gauge",
       "Enforced power limit of the GPU per NVML.", G, "nvml"),
    _d("sigma_nvml_gpu_xid_errors_total", "counter",
       "Xid error events the driver reported for the GPU since the exporter started; "
       "0 from the first reading on GPUs that deliver Xid events.", G, "nvml"),
    _d("sigma_nvml_gpu_last_xid", "gauge",
       "Code of the last Xid error reported for the GPU (0: none since the exporter "
       "started).", G, "nvml"),
    _d("sigma_nvml_gpu_ecc_uncorrected_errors_total", "counter",
       "Uncorrected ECC memory errors per NVML (volatile count: since the driver loaded); "
       "absent on GPUs without ECC.", G, "nvml"),
    _d("sigma_nvml_gpu_row_remap_pending", "gauge",
       "1 if a memory row remap waits for a GPU reset, else 0 (GPUs with row remapping).",
       G, "nvml"),
    _d("sigma_nvml_gpu_row_remap_failure", "gauge",
       "1 if a memory row could not be remapped (the GPU needs service), else 0.", G, "nvml"),
    _d("sigma_nvml_gpu_throttle_active", "gauge",
       "1 if NVML reports this clocks-throttle reason active, else 0; every reason exists "
       "(gpu_idle, applications_clocks_setting, sw_power_cap, hw_slowdown, sync_boost, "
       "sw_thermal_slowdown, hw_thermal_slowdown, hw_power_brake_slowdown, "
       "display_clock_setting).", ("target", "gpu", "reason"), "nvml"),
    # --- outputs: the HLS/DASH playlists viewers get (docs/outputs.md) ------------
    _d("sigma_outputs_up", "gauge",
       "1 if the last round of the outputs source ran (the jobs were known and every "
       "root's read finished in time), else 0. One output that cannot be read is counted "
       "in sigma_output_errors_total instead.", T, "health"),
    _d("sigma_output_info", "info",
       "An HLS or DASH output of a job that lies under a configured root; path is its "
       "folder relative to the root; value is 1.",
       ("target", "job_name", "output", "format", "path"), "outputs"),
    _d("sigma_output_up", "gauge",
       "1 if the output's playlists were found and read this round, 0 if not (its reason "
       "is counted in sigma_output_errors_total).", JO, "outputs"),
    _d("sigma_output_errors_total", "counter",
       "Rounds in which an output, or one of its renditions, could not be read, by reason "
       "(missing, no_playlist, permission, outside_root, not_a_file, too_large, invalid, "
       "unsafe_uri, timeout, http, io_error). Every reason exists at 0 for every output.",
       ("target", "job_name", "output", "reason"), "outputs"),
    _d("sigma_output_renditions", "gauge",
       "Renditions of the output read this round (variant playlists, DASH "
       "Representations).", JO, "outputs"),
    _d("sigma_output_renditions_dropped", "gauge",
       "Renditions of the job left out by outputs.max_renditions (per job).", J, "outputs"),
    _d("sigma_output_playlist_age_seconds", "gauge",
       "Seconds since the rendition's playlist (DASH: manifest) last changed: a new "
       "segment, a moved window or an end. On disk from its mtime; over HTTP from the "
       "first poll that saw the change (never more than the truth).", JR, "outputs"),
    _d("sigma_output_target_duration_seconds", "gauge",
       "EXT-X-TARGETDURATION of the media playlist (DASH: the longest segment listed).",
       JR, "outputs"),
    _d("sigma_output_stale", "gauge",
       "1 if the live playlist did not change for longer than 1.5 target durations "
       "(RFC 8216 6.2.1; DASH: 1.5 x the longer of minimumUpdatePeriod and the longest "
       "segment), else 0. An ended playlist is not stale.", JR, "outputs"),
    _d("sigma_output_ended", "gauge",
       "1 if the playlist says the stream ended (EXT-X-ENDLIST; DASH type static), else 0.",
       JR, "outputs"),
    _d("sigma_output_media_sequence", "gauge",
       "EXT-X-MEDIA-SEQUENCE of the playlist (DASH: the newest segment's $Number$).",
       JR, "outputs"),
    _d("sigma_output_segments_total", "counter",
       "New segments seen in the playlist since the exporter first saw it (several "
       "between two polls are counted; a restarted playlist counts its segments anew).",
       JR, "outputs"),
    _d("sigma_output_media_seconds_total", "counter",
       "Seconds of media in the new segments (EXTINF durations): its rate against real "
       "time is the output's own speed.", JR, "outputs"),
    _d("sigma_output_discontinuities_total", "counter",
       "New segments that follow an EXT-X-DISCONTINUITY.", JR, "outputs"),
    _d("sigma_output_segments_overlong", "gauge",
       "Segments listed whose EXTINF, rounded to the nearest integer, exceeds the target "
       "duration (RFC 8216 4.3.3.1).", JR, "outputs"),
    _d("sigma_output_segments_missing", "gauge",
       "Segments listed that are not there (on disk every listed one is checked; over "
       "HTTP the newest only).", JR, "outputs"),
    _d("sigma_output_window_seconds", "gauge",
       "Seconds of media the live playlist lists (when read whole); RFC 8216 6.2.2 wants "
       "at least three target durations once segments are removed.", JR, "outputs"),
    _d("sigma_output_segment_bytes_per_second", "gauge",
       "The newest segment's size divided by its duration.", JR, "outputs"),
    _d("sigma_output_declared_bytes_per_second", "gauge",
       "The rendition's declared peak rate (HLS BANDWIDTH, DASH @bandwidth) / 8.",
       JR, "outputs"),
    _d("sigma_output_update_period_seconds", "gauge",
       "DASH minimumUpdatePeriod of the manifest.", JR, "outputs"),
    # --- cross-check: Sigma's GPU figures against the driver's ----------------
    _d("sigma_gpu_crosscheck_difference", "gauge",
       "Sigma's figure minus NVML's, in the field's base unit (bytes, ratio, celsius; "
       "count against encoder sessions).", ("target", "gpu", "field"), "nvml"),
    _d("sigma_gpu_crosscheck_mismatch", "gauge",
       "1 if Sigma and NVML disagree beyond tolerance, else 0: memory and identity per "
       "round, utilisation and temperature on the median of a full window.",
       ("target", "gpu", "field"), "nvml"),
    _d("sigma_gpu_crosscheck_gpu_missing", "gauge",
       "1 for a GPU one side reports and the other does not; side names the side missing it.",
       ("target", "gpu", "side"), "nvml"),
)

BY_NAME: dict[str, MetricDef] = {d.name: d for d in DEFINITIONS}


def _check_definitions() -> None:
    families: set[str] = set()
    for d in DEFINITIONS:
        if not d.name.startswith("sigma_"):
            raise ValueError(f"{d.name}: every metric needs the sigma_ prefix")
        if d.name.endswith("_total") != (d.type == "counter"):
            raise ValueError(f"{d.name}: _total is for counters, and counters only")
        if d.name.endswith("_info") != (d.type == "info"):
            raise ValueError(f"{d.name}: _info is for info families, and those only")
        if d.family in families:  # OpenMetrics forbids `x` beside `x_total`
            raise ValueError(f"family {d.family} defined twice")
        families.add(d.family)


_check_definitions()
