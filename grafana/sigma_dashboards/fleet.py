"""Sigma fleet: every server the exporters poll, who is up, what runs, how loaded."""

from __future__ import annotations

from .lib import (
    FLEET_UID,
    JOBS_LINK,
    JOBS_LINK_FOR_ROW,
    LICENCE_MAPPING,
    LINK_MAPPING,
    SERVER_LINK,
    UP_MAPPING,
    Board,
    Col,
    Dashboard,
    Q,
    bargauge,
    behind_real_time,
    datasource_variable,
    firing_alerts,
    licence_valid,
    new_events,
    query_variable,
    ratio_gauge,
    red_from,
    restart_annotation,
    speed_colours,
    stat,
    table,
    timeseries,
)
from .thresholds import Thresholds


def s(metric: str, *matchers: str) -> str:
    """A selector of `metric` on the selected servers, with extra matchers."""
    return metric + "{" + ",".join(('target=~"$target"', *matchers)) + "}"


def dashboard(t: Thresholds) -> Dashboard:
    b = Board(
        uid=FLEET_UID,
        title="Sigma fleet",
        description="Every Sigma Media Server the exporters poll: who is up, what runs, "
        "how loaded the GPUs are.",
        variables=[
            datasource_variable(),
            query_variable(
                "target", "target", "sigma_up", title="Server", multi=True, include_all=True
            ),
        ],
    )
    b.annotations.append(
        restart_annotation(
            "Server restarts",
            s("sigma_server_restarts_total"),
            ("target",),
            "Sigma server restarted",
        )
    )
    _overview(b, t)
    _channel_errors(b)
    _servers(b, t)
    _gpus(b, t)
    _exporters(b)
    return b.render()


def _overview(b: Board, t: Thresholds) -> None:
    """Counts over the fleet, and the channels that fall behind."""
    behind = behind_real_time(s("sigma_job_speed"), s("sigma_job_up"), t.job_speed_ratio)
    not_valid = s("sigma_license_status", 'status!="VALID"')
    b.row("Overview")
    b.add(
        stat(
            "Servers up",
            "Targets whose last dump poll succeeded, out of all selected targets "
            "(sigma_up). A server counts as up when the exporter could read its API.",
            "none",
            [
                Q(f"sum({s('sigma_up')})", "up"),
                Q(f"count({s('sigma_up')})", "of"),
            ],
            text_mode="value_and_name",
            color_mode="none",
            w=3,
        ),
        stat(
            "Servers down",
            "Targets whose last dump poll failed (sigma_up == 0). Their data series are "
            "gone until the next successful poll; see the server dashboard's exporter health.",
            "none",
            [Q(f"count({s('sigma_up')} == 0) or vector(0)")],
            thresholds=((None, "green"), (1, "red")),
            color_mode="background",
            w=3,
        ),
        stat(
            "Channels running",
            "Jobs whose state is started or running (sigma_job_up == 1).",
            "none",
            [Q(f"sum({s('sigma_job_up')})")],
            w=3,
        ),
        stat(
            "Channels behind real time",
            "Running jobs whose speed averaged over 5 minutes (sigma_job_speed) is below "
            f"{t.job_speed_ratio}, where SigmaJobBehindRealtime fires: the channel falls "
            "behind and viewers will see stalls.",
            "none",
            [Q(f"count({behind}) or vector(0)")],
            thresholds=((None, "green"), (1, "orange")),
            color_mode="background",
            w=3,
        ),
        stat(
            "Channels down",
            "Jobs the server knows that are not started or running (sigma_job_up == 0).",
            "none",
            [Q(f"count({s('sigma_job_up')} == 0) or vector(0)")],
            thresholds=((None, "green"), (1, "red")),
            color_mode="background",
            w=3,
        ),
        stat(
            "Queued jobs",
            "Jobs waiting to be started, summed over the selected servers (sigma_jobs_queued).",
            "none",
            [Q(f"sum({s('sigma_jobs_queued')})")],
            thresholds=((None, "green"), (1, "orange")),
            w=3,
        ),
        stat(
            "Licences not valid",
            "Servers whose licence is not VALID (sigma_license_status), where "
            "SigmaLicenseNotValid pages: Sigma stops serving when its licence lapses.",
            "none",
            [Q(f"count({not_valid}) or vector(0)")],
            thresholds=((None, "green"), (1, "red")),
            color_mode="background",
            w=3,
        ),
        stat(
            "Control-plane links down",
            "Servers whose link to Sigma's control plane (NATS) is down "
            "(sigma_control_plane_connected == 0).",
            "none",
            [Q(f"count({s('sigma_control_plane_connected')} == 0) or vector(0)")],
            thresholds=((None, "green"), (1, "orange")),
            color_mode="background",
            w=3,
        ),
    )
    b.link(
        JOBS_LINK, "Channels running", "Channels behind real time", "Channels down", "Queued jobs"
    )
    b.add(
        bargauge(
            "Server versions",
            "How many selected servers run each Sigma version (sigma_server_info). "
            "More than one bar means a rollout is in progress or a server was missed.",
            "none",
            [Q(f"count by (version) ({s('sigma_server_info')})", "{{version}}")],
            w=8,
            h=6,
            min_=0,
        ),
        timeseries(
            "Channels by state",
            "Jobs per state as the servers count them (sigma_tasks, dump `task`), summed "
            "over the selected servers.",
            "none",
            [Q(f"sum by (state) ({s('sigma_tasks')})", "{{state}}")],
            w=8,
            h=6,
            stack=True,
            decimals=0,
        ),
        timeseries(
            "Queued jobs by server",
            "Jobs waiting to be started per server (sigma_jobs_queued). A queue that "
            "does not drain means the server cannot place new jobs (GPU full, licence).",
            "none",
            [Q(f"sum by (target) ({s('sigma_jobs_queued')})", "{{target}}")],
            w=8,
            h=6,
            decimals=0,
        ),
    )
    b.add(
        table(
            "Slow channels",
            "Running jobs whose speed averaged over 5 minutes is below "
            f"{t.job_speed_ratio} (SigmaJobBehindRealtime's threshold). Empty when every "
            "channel keeps up.",
            [Q(f"max by (target, job_name) ({behind})", column="Speed (5 min mean)")],
            labels=("target", "job_name"),
            h=6,
            columns=(
                Col(
                    "Speed (5 min mean)",
                    decimals=2,
                    cell="color-text",
                    thresholds=speed_colours(t.job_speed_ratio),
                ),
            ),
            label_links={"job_name": [JOBS_LINK_FOR_ROW]},
            sort_by=("Speed (5 min mean)", False),
            w=12,
            empty_when_healthy=True,
        ),
        # `target=~"$target|"`: also the alerts that name no server.
        firing_alerts('target=~"$target|"', w=12),
    )


def _channel_errors(b: Board) -> None:
    """Error lines of every channel by class: the feed or the CDN, and where."""
    errors = new_events(s("sigma_job_errors_by_class_total"), "$__rate_interval")
    sides = new_events(s("sigma_job_errors_by_class_total", 'class=~"input|output"'),
                       "$__rate_interval")
    b.add(
        timeseries(
            "Channel errors by class",
            "New error lines per rate window over every channel of the selected servers, "
            "by class of their code (sigma_job_errors_by_class_total): input is the feed, "
            "output the CDN, origin, disk or network, processing a Sigma host, config a "
            "channel's settings, unknown a code Sigma does not document. A code in two "
            "classes counts in both.",
            "short",
            [Q(f"sum by (class) {errors}", "{{class}}")],
            w=12,
            h=6,
            bars=True,
            stack=True,
            empty_when_healthy=True,
        ),
        timeseries(
            "Input and output errors by server",
            "New input-class (the feed) and output-class (CDN, origin, disk, network) error "
            "lines per rate window and server (sigma_job_errors_by_class_total). One server "
            "alone: its sources or its uplink; many at once: a shared feed or the CDN.",
            "short",
            [Q(f"sum by (target, class) {sides}", "{{target}} {{class}}")],
            w=12,
            h=6,
            bars=True,
            empty_when_healthy=True,
        ),
    )


def _servers(b: Board, t: Thresholds) -> None:
    """One row per server, linked to its server dashboard."""
    b.row("Servers")
    b.add(
        table(
            "Servers",
            "One row per selected target. Uptime is now minus the server's start time; "
            "licence is valid only when its status is VALID; control plane is the link to "
            "Sigma's control plane; last poll is the exporter's last successful dump poll. "
            "Click a target to open its server dashboard. A target that is down keeps only "
            "its health columns.",
            [
                Q(f"max by (target) ({s('sigma_up')})", column="Up"),
                Q(f"max by (target, version) ({s('sigma_server_info')})"),
                Q(
                    f"max by (target) (time() - {s('sigma_server_start_timestamp_seconds')})",
                    column="Uptime",
                    unit="s",
                ),
                Q(f"count by (target) ({s('sigma_gpu_info')})", column="GPUs"),
                Q(f"sum by (target) ({s('sigma_job_up')})", column="Channels running"),
                Q(f"max by (target) ({s('sigma_jobs')})", column="Jobs known"),
                Q(
                    f"max by (target) {licence_valid(s('sigma_license_status'))}",
                    column="Licence",
                ),
                Q(
                    f"max by (target) ({s('sigma_control_plane_connected')})",
                    column="Control plane",
                ),
                Q(
                    f"max by (target) ({s('sigma_host_cpu_utilization_ratio')})",
                    column="Host CPU",
                    unit="percentunit",
                ),
                Q(
                    f"max by (target) ({s('sigma_host_memory_used_bytes')} / "
                    f"{s('sigma_host_memory_total_bytes')})",
                    column="Memory used",
                    unit="percentunit",
                ),
                Q(
                    f"max by (target) ({s('sigma_last_poll_success_timestamp_seconds')}) * 1000",
                    column="Last poll",
                    unit="dateTimeFromNow",
                ),
            ],
            labels=("target", "version"),
            h=10,
            columns=(
                Col("Up", mappings=tuple(UP_MAPPING), cell="color-background"),
                Col("Licence", mappings=tuple(LICENCE_MAPPING), cell="color-background"),
                Col("Control plane", mappings=tuple(LINK_MAPPING), cell="color-background"),
                # No alert on host CPU: busy transcoders are the point of the host.
                ratio_gauge("Host CPU", 0.95, 0.15),
                ratio_gauge("Memory used", t.host_memory_utilization_ratio),
            ),
            label_links={"target": [SERVER_LINK]},
            sort_by=("Up", False),
        )
    )


def _gpus(b: Board, t: Thresholds) -> None:
    """Every GPU of the fleet: load table, hottest, load by server."""
    b.row("GPUs")
    gpu_cols = (
        ratio_gauge("Core", 0.95, 0.15),  # no alert: a full core is not a fault by itself
        ratio_gauge("Encoder", t.gpu_encoder_utilization_ratio),
        ratio_gauge("Decoder", t.gpu_decoder_utilization_ratio),
        ratio_gauge("Memory used", t.gpu_memory_utilization_ratio),
        Col(
            "Temperature",
            cell="color-text",
            thresholds=red_from(t.gpu_temperature_celsius, 10),
        ),
    )
    b.add(
        table(
            "GPU load, every GPU",
            "One row per GPU of the selected servers, as Sigma reports it: core, NVENC "
            "(encoder) and NVDEC (decoder) utilisation, memory and temperature. Sort by a "
            "column to find the busiest encoders.",
            [
                Q(f"max by (target, gpu, name) ({s('sigma_gpu_info')})"),
                Q(
                    f"max by (target, gpu) ({s('sigma_gpu_utilization_ratio')})",
                    column="Core",
                    unit="percentunit",
                ),
                Q(
                    f"max by (target, gpu) ({s('sigma_gpu_encoder_utilization_ratio')})",
                    column="Encoder",
                    unit="percentunit",
                ),
                Q(
                    f"max by (target, gpu) ({s('sigma_gpu_decoder_utilization_ratio')})",
                    column="Decoder",
                    unit="percentunit",
                ),
                Q(
                    f"max by (target, gpu) ({s('sigma_gpu_memory_used_bytes')} / "
                    f"{s('sigma_gpu_memory_total_bytes')})",
                    column="Memory used",
                    unit="percentunit",
                ),
                Q(
                    f"max by (target, gpu) ({s('sigma_gpu_temperature_celsius')})",
                    column="Temperature",
                    unit="celsius",
                ),
            ],
            labels=("target", "gpu", "name"),
            h=10,
            columns=gpu_cols,
            label_links={"target": [SERVER_LINK]},
            sort_by=("Encoder", True),
        )
    )
    b.add(
        bargauge(
            "Hottest GPUs",
            "The ten hottest GPUs of the selected servers (sigma_gpu_temperature_celsius).",
            "celsius",
            [
                Q(
                    f"sort_desc(topk(10, {s('sigma_gpu_temperature_celsius')}))",
                    "{{target}} GPU {{gpu}}",
                )
            ],
            w=8,
            h=9,
            min_=20,
            max_=100,
            thresholds=red_from(t.gpu_temperature_celsius, 10),
        ),
        timeseries(
            "Encoder load by server",
            "NVENC utilisation averaged over each server's GPUs; the dashed line is the "
            "busiest single GPU of the fleet.",
            "percentunit",
            [
                Q(f"avg by (target) ({s('sigma_gpu_encoder_utilization_ratio')})", "{{target}}"),
                Q(f"max({s('sigma_gpu_encoder_utilization_ratio')})", "busiest GPU"),
            ],
            w=8,
            h=9,
            min_=0,
            max_=1,
            dashed="busiest GPU",
        ),
        timeseries(
            "Decoder load by server",
            "NVDEC utilisation averaged over each server's GPUs; the dashed line is the "
            "busiest single GPU of the fleet.",
            "percentunit",
            [
                Q(f"avg by (target) ({s('sigma_gpu_decoder_utilization_ratio')})", "{{target}}"),
                Q(f"max({s('sigma_gpu_decoder_utilization_ratio')})", "busiest GPU"),
            ],
            w=8,
            h=9,
            min_=0,
            max_=1,
            dashed="busiest GPU",
        ),
    )


def _exporters(b: Board) -> None:
    """The exporters' own health: config, versions, poll errors."""
    b.row("Exporters")
    b.add(
        stat(
            "Configured targets",
            "Sigma targets configured in all exporters (sigma_targets). Compare with the "
            "targets Prometheus sees above.",
            "none",
            [Q("sum(sigma_targets)")],
            w=4,
        ),
        stat(
            "Config reload",
            "Whether every exporter's last configuration (re)load succeeded "
            "(sigma_config_last_reload_successful). A failed reload keeps the old config.",
            "none",
            [Q("min(sigma_config_last_reload_successful)")],
            w=4,
            mappings=[
                {
                    "type": "value",
                    "options": {
                        "0": {"color": "red", "index": 1, "text": "failed"},
                        "1": {"color": "green", "index": 0, "text": "ok"},
                    },
                }
            ],
            color_mode="background",
        ),
        stat(
            "Last config load",
            "When the oldest of the exporters' last successful configuration loads was "
            "(sigma_config_last_reload_success_timestamp_seconds).",
            "dateTimeFromNow",
            [Q("min(sigma_config_last_reload_success_timestamp_seconds) * 1000")],
            w=4,
            color_mode="none",
        ),
        bargauge(
            "Exporter versions",
            "How many exporter processes run each sigma-exporter and Python version "
            "(sigma_exporter_build_info).",
            "none",
            [
                Q(
                    "count by (version, python_version) (sigma_exporter_build_info)",
                    "{{version}} (Python {{python_version}})",
                )
            ],
            w=12,
            h=4,
            min_=0,
        ),
    )
    b.add(
        timeseries(
            "Poll errors by server and reason",
            "Failed polls per minute, by target, source (dump, progress) and reason "
            "(timeout, connect, tls, http_status, too_large, protocol, invalid_json, "
            "invalid_schema, series_limit, internal). Empty while every poll succeeds.",
            "cpm",
            [
                Q(
                    "sum by (target, source, reason) "
                    f"(rate({s('sigma_poll_errors_total')}[$__rate_interval])) * 60",
                    "{{target}} {{source}} {{reason}}",
                )
            ],
            w=24,
            h=7,
            empty_when_healthy=True,
        )
    )
