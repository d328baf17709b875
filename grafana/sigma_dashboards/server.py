"""Sigma server: one Sigma Media Server, from host and GPUs to the exporter's view."""

from __future__ import annotations

from .lib import (
    JOBS_LINK,
    JOBS_LINK_FOR_ROW,
    LICENCE_MAPPING,
    LINK_MAPPING,
    MISMATCH_MAPPING,
    MISSING_MAPPING,
    SERVER_UID,
    UP_MAPPING,
    Board,
    Col,
    Dashboard,
    Q,
    behind_real_time,
    datasource_variable,
    firing_alerts,
    licence_valid,
    mean_speed,
    new_events,
    query_variable,
    red_from,
    restart_annotation,
    speed_colours,
    stat,
    state_timeline,
    table,
    timeseries,
)
from .thresholds import Thresholds


def s(metric: str, *matchers: str) -> str:
    """A selector of `metric` on the one server shown, with extra matchers."""
    return metric + "{" + ",".join(('target="$target"', *matchers)) + "}"


GPU = "GPU {{gpu}}"  # legend of per-GPU series


def dashboard(t: Thresholds) -> Dashboard:
    b = Board(
        uid=SERVER_UID,
        title="Sigma server",
        description="One Sigma Media Server: host, the Sigma process, GPUs (with the NVML "
        "cross-check), supervised apps, storage and the exporter's view of it.",
        variables=[
            datasource_variable(),
            query_variable(
                "target", "target", "sigma_up", title="Server", multi=False, include_all=False
            ),
            query_variable(
                "gpu",
                "gpu",
                'sigma_gpu_info{target="$target"}',
                title="GPU",
                multi=True,
                include_all=True,
            ),
        ],
    )
    b.annotations += [
        restart_annotation(
            "Server restarts", s("sigma_server_restarts_total"), ("target",),
            "Sigma server restarted", color="red",
        ),
        restart_annotation(
            "App restarts", s("sigma_app_restarts_total"), ("target", "app"),
            "Supervised app restarted",
        ),
        # Off by default: a server runs many channels, and their restarts would
        # cover the graphs; the channels dashboard shows them per channel.
        restart_annotation(
            "Channel restarts", s("sigma_job_restarts_total"), ("target", "job_name"),
            "Channel restarted", color="yellow", enable=False,
        ),
    ]
    _overview(b, t)
    _channels(b, t)
    _host(b)
    _process(b)
    _gpus(b, t)
    _crosscheck(b)
    _nvml(b)
    _apps(b)
    _storage(b)
    _exporter_health(b)
    return b.render()


def _overview(b: Board, t: Thresholds) -> None:
    """Up, version, uptime, restarts, clock skew, jobs."""
    b.row("Server")
    b.add(
        stat(
            "Up",
            "Whether the exporter's last dump poll of this server succeeded (sigma_up). "
            "While down, every other panel except exporter health is empty.",
            "none",
            [Q(s("sigma_up"))],
            w=3,
            mappings=UP_MAPPING,
            color_mode="background",
        ),
        stat(
            "Version",
            "Sigma version and edition (sigma_server_info).",
            "none",
            [Q(s("sigma_server_info"), "{{version}} ({{branch}})")],
            w=4,
            text_mode="name",
            color_mode="none",
        ),
        stat(
            "Uptime",
            "Time since the Sigma server process started (now minus dump `start`).",
            "s",
            [Q(f"time() - {s('sigma_server_start_timestamp_seconds')}")],
            w=3,
            thresholds=((None, "orange"), (3600, "green")),
        ),
        stat(
            "Restarts in range",
            "Times the server's start time moved during the shown time range "
            "(sigma_server_restarts_total).",
            "none",
            [
                Q(
                    f"round(increase({s('sigma_server_restarts_total')}[$__range]))",
                    range_reason="count of restarts over the shown period, not a rate",
                )
            ],
            w=3,
            thresholds=((None, "green"), (1, "orange")),
            decimals=0,
        ),
        stat(
            "Clock skew",
            "Server clock minus the exporter's clock when the answer arrived "
            "(sigma_server_clock_skew_seconds). Beyond a few seconds, job start times and "
            "recordings are off.",
            "s",
            [Q(s("sigma_server_clock_skew_seconds"))],
            w=3,
            # Red where SigmaClockSkew fires.
            thresholds=(
                (None, "red"),
                (-t.clock_skew_seconds, "green"),
                (t.clock_skew_seconds, "red"),
            ),
        ),
        stat(
            "Build",
            "When this Sigma build was made (sigma_server_build_timestamp_seconds).",
            "dateTimeAsIso",
            [Q(f"{s('sigma_server_build_timestamp_seconds')} * 1000")],
            w=4,
            color_mode="none",
        ),
        stat(
            "Speed factor",
            "Server speed factor exactly as the dump reports it (`speed`); its meaning is "
            "undocumented.",
            "none",
            [Q(s("sigma_server_speed"))],
            w=4,
            color_mode="none",
        ),
    )
    b.add(
        stat(
            "Jobs known",
            "Jobs the server knows (sigma_jobs, dump `total`).",
            "none",
            [Q(s("sigma_jobs"))],
            w=3,
        ),
        stat(
            "Queued jobs",
            "Jobs waiting to be started (sigma_jobs_queued).",
            "none",
            [Q(s("sigma_jobs_queued"))],
            w=3,
            thresholds=((None, "green"), (1, "orange")),
        ),
        stat(
            "Jobs left out",
            "Jobs the exporter's include/exclude filters or per-target maximum leave out "
            "(sigma_jobs_dropped); they have no per-channel series.",
            "none",
            [Q(s("sigma_jobs_dropped"))],
            w=3,
            thresholds=((None, "green"), (1, "orange")),
        ),
        timeseries(
            "Jobs by state",
            "Jobs per state as the server counts them (sigma_tasks, dump `task`).",
            "none",
            [Q(f"sum by (state) ({s('sigma_tasks')})", "{{state}}")],
            w=15,
            h=4,
            stack=True,
            decimals=0,
        ),
    )
    b.link(JOBS_LINK, "Jobs by state")
    _licence_and_link(b)
    # `target=~"$target|"`: also the alerts that name no server (the exporter down).
    b.add(firing_alerts('target=~"$target|"', h=5))


def _licence_and_link(b: Board) -> None:
    """The licence (Sigma stops serving when it lapses) and the control-plane link."""
    licence = s("sigma_license_status")
    link = s("sigma_control_plane_connected")
    b.add(
        stat(
            "Licence",
            "The licence's state as the server reports it (sigma_license_status, dump "
            "`licenseStatus`): red when it is not VALID, where SigmaLicenseNotValid pages. "
            "Sigma stops serving when its licence lapses. `other` is a status that is not "
            "a short word.",
            "none",
            [Q(licence_valid(licence), "{{status}}")],
            w=4,
            text_mode="name",
            color_mode="background",
            thresholds=((None, "red"), (1, "green")),
        ),
        stat(
            "Control plane",
            "Whether the server's link to Sigma's control plane (NATS) is up "
            "(sigma_control_plane_connected, dump `nats.connected`; undocumented). "
            "SigmaControlPlaneDisconnected warns when it stays down.",
            "none",
            [Q(link)],
            w=4,
            mappings=LINK_MAPPING,
            color_mode="background",
        ),
        stat(
            "Control-plane link up for",
            "Time since the control-plane link last came up (now minus "
            "sigma_control_plane_connect_timestamp_seconds, dump `nats.startup`). Shorter "
            "than the server's uptime: the link was re-established since the start.",
            "s",
            [Q(f"time() - {s('sigma_control_plane_connect_timestamp_seconds')}")],
            w=4,
            color_mode="none",
        ),
        state_timeline(
            "Licence over time",
            "Valid (green) or not (red) over the shown range (sigma_license_status).",
            [Q(f"max({licence_valid(licence)})", "licence")],
            LICENCE_MAPPING,
            w=6,
            h=4,
        ),
        state_timeline(
            "Control-plane link over time",
            "Connected (green) or not (orange) over the shown range "
            "(sigma_control_plane_connected).",
            [Q(f"max({link})", "control plane")],
            LINK_MAPPING,
            w=6,
            h=4,
        ),
    )


def _channels(b: Board, t: Thresholds) -> None:
    """This server's channels that need a look: down, or behind real time."""
    speed, up = s("sigma_job_speed"), s("sigma_job_up")
    # Down (known but not started or running), or running behind real time the
    # way SigmaJobBehindRealtime judges it. Each column keeps only these rows.
    failing = f"({up} == 0) or ({behind_real_time(speed, up, t.job_speed_ratio)})"

    def only_failing(expr: str) -> str:
        return f"{expr} and on (target, job_name) ({failing})"

    b.row("Channels")
    b.add(
        table(
            "Down and slow channels",
            "This server's channels that are down (known but not started or running) or "
            "whose speed averaged over 5 minutes is below "
            f"{t.job_speed_ratio}, where SigmaJobBehindRealtime fires; down ones first. "
            "Empty when every channel runs and keeps up. Click a channel to open it.",
            [
                Q(f"max by (target, job_name) ({only_failing(up)})", column="Up"),
                Q(f"max by (target, job_name, state) ({only_failing(s('sigma_job_state'))})"),
                Q(
                    f"max by (target, job_name) ({only_failing(mean_speed(speed))})",
                    column="Speed (5 min mean)",
                ),
                Q(
                    "max by (target, job_name) "
                    f"({only_failing(s('sigma_job_uptime_seconds'))})",
                    column="Uptime",
                    unit="s",
                ),
                Q(
                    "max by (target, job_name) (round(increase("
                    f"{s('sigma_job_restarts_total')}[$__range])) "
                    f"and on (target, job_name) ({failing}))",
                    column="Restarts in range",
                    range_reason="count of channel restarts over the shown period, not a rate",
                ),
            ],
            labels=("target", "job_name", "state"),
            h=7,
            columns=(
                Col("Up", mappings=tuple(UP_MAPPING), cell="color-background"),
                Col(
                    "Speed (5 min mean)",
                    decimals=2,
                    cell="color-text",
                    thresholds=speed_colours(t.job_speed_ratio),
                ),
                Col("Restarts in range", decimals=0),
            ),
            label_links={"job_name": [JOBS_LINK_FOR_ROW]},
            sort_by=("Up", False),
            empty_when_healthy=True,
        )
    )
    b.add(
        timeseries(
            "Channel errors by class",
            "New error lines per rate window over this server's channels, by class of "
            "their code (sigma_job_errors_by_class_total): input is the feed, output the "
            "CDN, origin, disk or network, processing this host, config a channel's "
            "settings, unknown a code Sigma does not document. A code in two classes counts "
            "in both. Many channels with input errors at once: a shared source; with "
            "processing errors: this host.",
            "short",
            [Q("sum by (class) "
               f"{new_events(s('sigma_job_errors_by_class_total'), '$__rate_interval')}",
               "{{class}}")],
            w=24,
            h=6,
            bars=True,
            stack=True,
            empty_when_healthy=True,
        )
    )


def _host(b: Board) -> None:
    """Host CPU, memory, OS and network, as the server reports them."""
    b.row("Host")
    b.add(
        timeseries(
            "Host CPU",
            "Host CPU usage, 0-100 % of all cores (sigma_host_cpu_utilization_ratio).",
            "percentunit",
            [Q(s("sigma_host_cpu_utilization_ratio"), "host CPU")],
            w=8,
            min_=0,
            max_=1,
        ),
        timeseries(
            "Host memory and swap",
            "Host RAM and swap, used and total (dashed), as the server reports them.",
            "bytes",
            [
                Q(s("sigma_host_memory_used_bytes"), "memory used"),
                Q(s("sigma_host_memory_total_bytes"), "memory total"),
                Q(s("sigma_host_swap_used_bytes"), "swap used"),
                Q(s("sigma_host_swap_total_bytes"), "swap total"),
            ],
            w=8,
            min_=0,
            dashed="total",
        ),
        stat(
            "CPU cores",
            "CPU cores of the host (System.cores).",
            "none",
            [Q(s("sigma_host_cpu_cores"))],
            w=4,
            color_mode="none",
        ),
        stat(
            "Operating system",
            "Host operating system (sigma_host_info).",
            "none",
            [Q(s("sigma_host_info"), "{{os}}")],
            w=4,
            text_mode="name",
            color_mode="none",
        ),
        stat(
            "System figures age",
            "Time since the server last refreshed its own system figures "
            "(System.updateTime). If it grows, host and GPU figures are stale even "
            "though polls succeed.",
            "s",
            [Q(f"time() - {s('sigma_host_stats_timestamp_seconds')}")],
            w=8,
            thresholds=((None, "green"), (300, "orange")),
        ),
    )
    b.add(
        table(
            "Network interfaces",
            "Host network interfaces and addresses the server reports (sigma_host_network_info).",
            [Q(f"max by (interface, address, cidr) ({s('sigma_host_network_info')})")],
            labels=("interface", "address", "cidr"),
            w=24,
            h=5,
        )
    )


def _process(b: Board) -> None:
    """The Sigma server process: CPU, memory, children."""
    b.row("Sigma process")
    b.add(
        timeseries(
            "Process CPU",
            "CPU of the Sigma server process; 100 % is one core (sigma_process_cpu_ratio).",
            "percentunit",
            [Q(s("sigma_process_cpu_ratio"), "sigma")],
            w=8,
            min_=0,
        ),
        timeseries(
            "Process memory",
            "Resident memory of the Sigma server process (sigma_process_resident_memory_bytes). "
            "Steady growth hints at a leak.",
            "bytes",
            [Q(s("sigma_process_resident_memory_bytes"), "resident")],
            w=8,
            min_=0,
        ),
        timeseries(
            "Process children and threads",
            "Child processes (one per running transcoder, roughly) and threads of the "
            "Sigma server process.",
            "none",
            [
                Q(s("sigma_process_children"), "children"),
                Q(s("sigma_server_threads"), "threads"),
            ],
            w=8,
            min_=0,
            decimals=0,
        ),
    )


def _gpus(b: Board, t: Thresholds) -> None:
    """The GPUs Sigma uses and their codecs, then one repeated row per GPU."""
    b.row("GPUs (as Sigma reports them)")
    b.add(
        table(
            "GPUs",
            "The GPUs Sigma uses (sigma_gpu_info) and, in agent mode, the GPUs the NVIDIA "
            "driver sees (sigma_nvml_gpu_info) with UUID and PCI bus id.",
            [
                Q(f"max by (gpu, name) ({s('sigma_gpu_info')})"),
                Q(f"max by (gpu, uuid, pci_bus_id) ({s('sigma_nvml_gpu_info')})"),
            ],
            labels=("gpu", "name", "uuid", "pci_bus_id"),
            w=12,
            h=6,
        ),
        table(
            "Codecs",
            "Codecs each device can encode or decode (sigma_codec_info, dump `supported[]`).",
            [Q(f"max by (device, direction, codec) ({s('sigma_codec_info')})")],
            labels=("device", "direction", "codec"),
            w=12,
            h=6,
        ),
    )
    _one_gpu(b, t)


def g(metric: str) -> str:
    """A selector of `metric` on the GPU of the repeated row (the `gpu` variable)."""
    return s(metric, 'gpu=~"$gpu"')


def _one_gpu(b: Board, t: Thresholds) -> None:
    """A row per GPU (the `gpu` variable): its model, its load and where alerts fire."""
    b.row("GPU $gpu", repeat="gpu")
    used = f"{g('sigma_gpu_memory_used_bytes')} / {g('sigma_gpu_memory_total_bytes')}"
    b.add(
        stat(
            "GPU $gpu model",
            "The model of this GPU as Sigma names it (sigma_gpu_info, label `name`).",
            "none",
            [Q(f"max by (gpu, name) ({g('sigma_gpu_info')})", "{{name}}")],
            w=8,
            text_mode="name",
            color_mode="none",
        ),
        stat(
            "GPU $gpu temperature",
            "Temperature now (sigma_gpu_temperature_celsius); red where "
            "SigmaGPUTemperatureHigh fires, orange 10 degrees before.",
            "celsius",
            [Q(g("sigma_gpu_temperature_celsius"))],
            thresholds=red_from(t.gpu_temperature_celsius, 10),
        ),
        stat(
            "GPU $gpu memory used",
            "Share of this GPU's memory in use (sigma_gpu_memory_used_bytes over "
            "sigma_gpu_memory_total_bytes); red where SigmaGPUMemoryNearFull fires.",
            "percentunit",
            [Q(used)],
            thresholds=red_from(t.gpu_memory_utilization_ratio, 0.1),
        ),
        stat(
            "GPU $gpu encoder",
            "NVENC load now (sigma_gpu_encoder_utilization_ratio); red at the load where "
            "SigmaGPUEncoderSaturated fires once its 10-minute mean gets there.",
            "percentunit",
            [Q(g("sigma_gpu_encoder_utilization_ratio"))],
            thresholds=red_from(t.gpu_encoder_utilization_ratio, 0.1),
        ),
        stat(
            "GPU $gpu decoder",
            "NVDEC load now (sigma_gpu_decoder_utilization_ratio); red at the load where "
            "SigmaGPUDecoderSaturated fires once its 10-minute mean gets there.",
            "percentunit",
            [Q(g("sigma_gpu_decoder_utilization_ratio"))],
            thresholds=red_from(t.gpu_decoder_utilization_ratio, 0.1),
        ),
    )
    b.add(
        timeseries(
            "GPU $gpu load",
            "Core, encoder (NVENC) and decoder (NVDEC) utilisation of this GPU, 0-100 %, "
            "as Sigma reports them.",
            "percentunit",
            [
                Q(g("sigma_gpu_utilization_ratio"), "core"),
                Q(g("sigma_gpu_encoder_utilization_ratio"), "encoder"),
                Q(g("sigma_gpu_decoder_utilization_ratio"), "decoder"),
            ],
            w=6,
            min_=0,
            max_=1,
        ),
        timeseries(
            "GPU $gpu temperature over time",
            "Temperature of this GPU as Sigma reports it (sigma_gpu_temperature_celsius). "
            "The dashed red line is where SigmaGPUTemperatureHigh fires.",
            "celsius",
            [Q(g("sigma_gpu_temperature_celsius"), "temperature")],
            w=6,
            threshold_line=t.gpu_temperature_celsius,
        ),
        timeseries(
            "GPU $gpu memory",
            "Memory used on this GPU, and its total (dashed), as Sigma reports them.",
            "bytes",
            [
                Q(g("sigma_gpu_memory_used_bytes"), "used"),
                Q(g("sigma_gpu_memory_total_bytes"), "total"),
            ],
            w=6,
            min_=0,
            dashed="total",
        ),
        timeseries(
            "GPU $gpu other fields (undocumented)",
            "Numeric GPU fields Sigma reports without documentation (soft, speed, percent, "
            "count, ...), exactly as reported. `count` looks like jobs placed on the GPU and "
            "`percent` like Sigma's own load figure; no unit is assumed.",
            "none",
            [Q(g("sigma_gpu_reported_value"), "{{field}}")],
            w=6,
        ),
    )


def _crosscheck(b: Board) -> None:
    """Sigma's GPU figures against the NVIDIA driver's (agent mode)."""
    b.row("Cross-check: Sigma against the NVIDIA driver (agent mode)")
    for title, sig, nv, unit, max_ in (
        (
            "Core utilisation: Sigma vs NVML",
            "sigma_gpu_utilization_ratio",
            "sigma_nvml_gpu_utilization_ratio",
            "percentunit",
            1.0,
        ),
        (
            "Encoder: Sigma vs NVML",
            "sigma_gpu_encoder_utilization_ratio",
            "sigma_nvml_gpu_encoder_utilization_ratio",
            "percentunit",
            1.0,
        ),
        (
            "Decoder: Sigma vs NVML",
            "sigma_gpu_decoder_utilization_ratio",
            "sigma_nvml_gpu_decoder_utilization_ratio",
            "percentunit",
            1.0,
        ),
        (
            "Temperature: Sigma vs NVML",
            "sigma_gpu_temperature_celsius",
            "sigma_nvml_gpu_temperature_celsius",
            "celsius",
            None,
        ),
        (
            "Memory used: Sigma vs NVML",
            "sigma_gpu_memory_used_bytes",
            "sigma_nvml_gpu_memory_used_bytes",
            "bytes",
            None,
        ),
        (
            "Memory total: Sigma vs NVML",
            "sigma_gpu_memory_total_bytes",
            "sigma_nvml_gpu_memory_total_bytes",
            "bytes",
            None,
        ),
    ):
        b.add(
            timeseries(
                title,
                f"Sigma's figure ({sig}, solid) and the driver's ({nv}, dashed) per GPU. "
                "The lines should lie on top of each other; a gap means Sigma's view of the "
                "GPU is wrong or stale.",
                unit,
                [Q(s(sig), "Sigma " + GPU), Q(s(nv), "NVML " + GPU)],
                w=8,
                min_=0,
                max_=max_,
                dashed="^NVML",
            )
        )
    b.add(
        state_timeline(
            "Cross-check state",
            "Per GPU and field: agree (green) or mismatch (red) when Sigma and NVML "
            "disagree beyond tolerance over the window (sigma_gpu_crosscheck_mismatch).",
            [Q(s("sigma_gpu_crosscheck_mismatch"), GPU + " {{field}}")],
            MISMATCH_MAPPING,
            w=8,
        ),
        timeseries(
            "Cross-check difference (Sigma minus NVML)",
            "Sigma's figure minus NVML's per GPU and field, in the field's base unit: "
            "bytes for memory, ratio for utilisation, degrees for temperature, a count for "
            "encoder sessions (sigma_gpu_crosscheck_difference).",
            "none",
            [Q(s("sigma_gpu_crosscheck_difference"), GPU + " {{field}}")],
            w=8,
            overrides=[
                {
                    "matcher": {"id": "byRegexp", "options": "/memory/"},
                    "properties": [{"id": "unit", "value": "bytes"}],
                },
                {
                    "matcher": {"id": "byRegexp", "options": "/utili[sz]ation|load/"},
                    "properties": [{"id": "unit", "value": "percentunit"}],
                },
                {
                    "matcher": {"id": "byRegexp", "options": "/temp/"},
                    "properties": [{"id": "unit", "value": "celsius"}],
                },
            ],
        ),
        state_timeline(
            "GPU seen by one side only",
            "A GPU that Sigma reports and the driver does not, or the other way round "
            "(sigma_gpu_crosscheck_gpu_missing; `side` names the side missing it). Empty or "
            "green when both see the same GPUs.",
            [
                Q(
                    f"max by (gpu, side) ({s('sigma_gpu_crosscheck_gpu_missing')})",
                    GPU + " missing in {{side}}",
                )
            ],
            MISSING_MAPPING,
            w=8,
            empty_when_healthy=True,
        ),
    )


def _nvml(b: Board) -> None:
    """What the NVIDIA driver alone reports (agent mode): power, clocks, NVENC."""
    b.add(
        stat(
            "NVML up",
            "Whether NVML answered in the exporter's last round (sigma_nvml_up). Only set in "
            "agent mode, where the exporter runs on the server itself.",
            "none",
            [Q(s("sigma_nvml_up"))],
            w=4,
            h=8,
            mappings=UP_MAPPING,
            color_mode="background",
        ),
        timeseries(
            "GPU power (NVML)",
            "Power draw per GPU as the driver reports it (sigma_nvml_gpu_power_watts).",
            "watt",
            [Q(s("sigma_nvml_gpu_power_watts"), GPU)],
            w=10,
            min_=0,
        ),
        timeseries(
            "Video clock (NVML)",
            "Video engine clock per GPU (sigma_nvml_gpu_video_clock_hz). A drop under load "
            "means throttling (heat or power).",
            "hertz",
            [Q(s("sigma_nvml_gpu_video_clock_hz"), GPU)],
            w=10,
            min_=0,
        ),
    )
    b.add(
        timeseries(
            "NVENC sessions (NVML)",
            "Active NVENC encoder sessions per GPU as the driver counts them "
            "(sigma_nvml_gpu_encoder_sessions).",
            "none",
            [Q(s("sigma_nvml_gpu_encoder_sessions"), GPU)],
            w=6,
            min_=0,
            decimals=0,
        ),
        timeseries(
            "NVENC frame rate (NVML)",
            "Average NVENC frames per second per GPU (sigma_nvml_gpu_encoder_fps).",
            "suffix: fps",
            [Q(s("sigma_nvml_gpu_encoder_fps"), GPU)],
            w=6,
            min_=0,
        ),
        timeseries(
            "NVENC latency (NVML)",
            "Average NVENC encode latency per GPU (sigma_nvml_gpu_encoder_latency_seconds).",
            "s",
            [Q(s("sigma_nvml_gpu_encoder_latency_seconds"), GPU)],
            w=6,
            min_=0,
        ),
        timeseries(
            "Memory controller load (NVML)",
            "GPU memory controller utilisation per GPU (sigma_nvml_gpu_memory_utilization_ratio).",
            "percentunit",
            [Q(s("sigma_nvml_gpu_memory_utilization_ratio"), GPU)],
            w=6,
            min_=0,
            max_=1,
        ),
    )


def _apps(b: Board) -> None:
    """Helper apps the server supervises."""
    b.row("Supervised apps")
    b.add(
        table(
            "Apps",
            "Helper apps the server supervises (portal, nginx, origin, ...): state, uptime, "
            "CPU (100 % = one core), resident memory, children and restarts during the "
            "shown time range.",
            [
                Q(f"max by (app) ({s('sigma_app_up')})", column="Up"),
                Q(f"max by (app, state) ({s('sigma_app_state')})"),
                Q(f"max by (app) ({s('sigma_app_uptime_seconds')})", column="Uptime", unit="s"),
                Q(f"max by (app) ({s('sigma_app_cpu_ratio')})", column="CPU", unit="percentunit"),
                Q(
                    f"max by (app) ({s('sigma_app_resident_memory_bytes')})",
                    column="Memory",
                    unit="bytes",
                ),
                Q(f"max by (app) ({s('sigma_app_children')})", column="Children"),
                Q(
                    f"max by (app) (round(increase({s('sigma_app_restarts_total')}[$__range])))",
                    column="Restarts in range",
                    range_reason="count of app restarts over the shown period, not a rate",
                ),
            ],
            labels=("app", "state"),
            h=8,
            columns=(
                Col("Up", mappings=tuple(UP_MAPPING), cell="color-background"),
                Col(
                    "Restarts in range",
                    decimals=0,
                    cell="color-text",
                    thresholds=((None, "green"), (1, "orange")),
                ),
            ),
            sort_by=("Up", False),
        )
    )
    b.add(
        timeseries(
            "App CPU",
            "CPU per supervised app; 100 % is one core (sigma_app_cpu_ratio).",
            "percentunit",
            [Q(s("sigma_app_cpu_ratio"), "{{app}}")],
            w=8,
            min_=0,
        ),
        timeseries(
            "App memory",
            "Resident memory per supervised app (sigma_app_resident_memory_bytes).",
            "bytes",
            [Q(s("sigma_app_resident_memory_bytes"), "{{app}}")],
            w=8,
            min_=0,
        ),
        timeseries(
            "Restarts",
            "Restarts of the Sigma server and of each supervised app per rate window "
            "(increase of sigma_server_restarts_total and sigma_app_restarts_total).",
            "none",
            [
                Q(f"increase({s('sigma_server_restarts_total')}[$__rate_interval])", "server"),
                Q(
                    f"sum by (app) (increase({s('sigma_app_restarts_total')}[$__rate_interval]))",
                    "{{app}}",
                ),
            ],
            w=8,
            bars=True,
            min_=0,
        ),
    )


def _storage(b: Board) -> None:
    """Media storages and the log folder."""
    b.row("Storage and logs")
    b.add(
        table(
            "Storages",
            "Media storages: retention (media older than this is deleted), clean-up delay "
            "and number of folders.",
            [
                Q(
                    f"max by (storage) ({s('sigma_storage_retention_seconds')})",
                    column="Retention",
                    unit="s",
                ),
                Q(
                    f"max by (storage) ({s('sigma_storage_cleanup_delay_seconds')})",
                    column="Clean-up delay",
                    unit="s",
                ),
                Q(f"count by (storage) ({s('sigma_storage_folder_info')})", column="Folders"),
            ],
            labels=("storage",),
            w=8,
            h=7,
        ),
        table(
            "Storage folders",
            "Folders of each media storage (sigma_storage_folder_info).",
            [Q(f"max by (storage, folder) ({s('sigma_storage_folder_info')})")],
            labels=("storage", "folder"),
            w=6,
            h=7,
        ),
        timeseries(
            "Log folder size and trend",
            "Size of the server's log folder, and (dashed) where the last 6 hours' trend "
            "puts it in 7 days (predict_linear). A rising trend means logs are not rotated.",
            "bytes",
            [
                Q(s("sigma_log_used_bytes"), "{{folder}}"),
                Q(
                    f"predict_linear({s('sigma_log_used_bytes')}[6h], 7 * 86400)",
                    "{{folder}} in 7 days (trend)",
                ),
            ],
            w=10,
            h=7,
            min_=0,
            dashed="trend",
        ),
    )


def _exporter_health(b: Board) -> None:
    """How the exporter's polls of this server go."""
    b.row("Exporter health for this server")
    b.add(
        stat(
            "Progress poll",
            "Whether the last per-channel progress poll succeeded (sigma_progress_up). "
            "When it fails, channel series vanish while server series stay.",
            "none",
            [Q(s("sigma_progress_up"))],
            w=4,
            h=7,
            mappings=UP_MAPPING,
            color_mode="background",
        ),
        timeseries(
            "Poll duration",
            "Wall time of the exporter's last poll by source (dump, progress), against the "
            "configured poll interval (dashed).",
            "s",
            [
                Q(f"max by (source) ({s('sigma_poll_duration_seconds')})", "{{source}}"),
                Q(s("sigma_poll_interval_seconds"), "poll interval"),
            ],
            w=10,
            h=7,
            min_=0,
            dashed="interval",
        ),
        timeseries(
            "Time since last successful poll",
            "Seconds since the last successful dump poll "
            "(now minus sigma_last_poll_success_timestamp_seconds), against the poll "
            "interval (dashed). Grows while the server cannot be read.",
            "s",
            [
                Q(f"time() - {s('sigma_last_poll_success_timestamp_seconds')}", "since last"),
                Q(s("sigma_poll_interval_seconds"), "poll interval"),
            ],
            w=10,
            h=7,
            min_=0,
            dashed="interval",
        ),
    )
    b.add(
        timeseries(
            "Poll errors by reason",
            "Failed polls per minute by source and reason (timeout, connect, tls, "
            "http_status, too_large, protocol, invalid_json, invalid_schema, series_limit, "
            "internal). Empty while every poll succeeds.",
            "cpm",
            [
                Q(
                    "sum by (source, reason) "
                    f"(rate({s('sigma_poll_errors_total')}[$__rate_interval])) * 60",
                    "{{source}} {{reason}}",
                )
            ],
            w=12,
            h=7,
            bars=True,
            empty_when_healthy=True,
        ),
        timeseries(
            "Parse errors by field",
            "Answers with a field present but unparsable, per rate window and field path "
            "(new in sigma_parse_errors_total, first error included). Non-zero after a "
            "Sigma upgrade usually means the API changed a field.",
            "short",
            [
                Q(
                    "sum by (field) "
                    f"{new_events(s('sigma_parse_errors_total'), '$__rate_interval')}",
                    "{{field}}",
                )
            ],
            w=12,
            h=7,
            bars=True,
            empty_when_healthy=True,
        ),
    )
