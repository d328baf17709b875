"""Sigma channels: the transcoding jobs (channels) of the selected servers."""

from __future__ import annotations

from .lib import (
    JOBS_LINK_FOR_ROW,
    JOBS_UID,
    SERVER_LINK,
    UP_MAPPING,
    Board,
    Col,
    Dashboard,
    Q,
    datasource_variable,
    new_events,
    query_variable,
    stat,
    state_timeline,
    table,
    timeseries,
)
from .thresholds import Thresholds


def s(metric: str, *matchers: str) -> str:
    """A selector of `metric` on the selected servers and channels, with extra matchers."""
    return metric + "{" + ",".join(('target=~"$target"', 'job_name=~"$job"', *matchers)) + "}"


CHANNEL = "{{target}} / {{job_name}}"  # legend of per-channel series


def dashboard(t: Thresholds) -> Dashboard:
    b = Board(
        uid=JOBS_UID,
        title="Sigma channels",
        description="Transcoding jobs (channels) of the selected Sigma servers: state, "
        "speed against real time, bitrates, errors and restarts.",
        variables=[
            datasource_variable(),
            query_variable(
                "target", "target", "sigma_up", title="Server", multi=True, include_all=True
            ),
            query_variable(
                "job",
                "job_name",
                'sigma_job_up{target=~"$target"}',
                title="Channel",
                multi=True,
                include_all=True,
            ),
        ],
    )
    _overview(b, t)
    _speed(b)
    _bitrates(b)
    _errors(b)
    return b.render()


def _overview(b: Board, t: Thresholds) -> None:
    """Counts, the channels table and up/down over time."""
    b.row("Overview")
    b.add(
        stat(
            "Channels running",
            "Selected jobs whose state is started or running (sigma_job_up == 1).",
            "none",
            [Q(f"sum({s('sigma_job_up')})")],
            w=6,
        ),
        stat(
            "Behind real time",
            "Running selected jobs with speed below 1 (sigma_job_speed < 1).",
            "none",
            [
                Q(
                    f"count(({s('sigma_job_speed')} < 1) and on (target, job_name) "
                    f"({s('sigma_job_up')} == 1)) or vector(0)"
                )
            ],
            w=6,
            thresholds=((None, "green"), (1, "orange")),
            color_mode="background",
        ),
        stat(
            "Channels down",
            "Selected jobs not started or running (sigma_job_up == 0).",
            "none",
            [Q(f"count({s('sigma_job_up')} == 0) or vector(0)")],
            w=6,
            thresholds=((None, "green"), (1, "red")),
            color_mode="background",
        ),
        stat(
            "New errors",
            "New error lines in the shown range over all selected jobs "
            "(sigma_job_errors_total; each line counts once, when first seen).",
            "short",
            [Q(f"sum({new_events(s('sigma_job_errors_total'), '$__range')}) or vector(0)")],
            w=6,
            thresholds=((None, "green"), (1, "orange")),
        ),
    )
    b.add(
        table(
            "Channels",
            "Every selected job: state, speed (1 = real time), uptime, start time, total "
            "input and output bitrate, new errors per minute, error lines listed now and "
            "restarts during the shown range. Click a job to show only it.",
            [
                Q(f"max by (target, job_name) ({s('sigma_job_up')})", column="Up"),
                Q(f"max by (target, job_name, state) ({s('sigma_job_state')})"),
                Q(f"max by (target, job_name) ({s('sigma_job_speed')})", column="Speed"),
                Q(
                    f"max by (target, job_name) ({s('sigma_job_uptime_seconds')})",
                    column="Uptime",
                    unit="s",
                ),
                Q(
                    f"max by (target, job_name) ({s('sigma_job_start_timestamp_seconds')}) * 1000",
                    column="Started",
                    unit="dateTimeAsIso",
                ),
                Q(
                    f"sum by (target, job_name) ({s('sigma_job_input_bytes_per_second')}) * 8",
                    column="Input",
                    unit="bps",
                ),
                Q(
                    f"sum by (target, job_name) ({s('sigma_job_output_bytes_per_second')}) * 8",
                    column="Output",
                    unit="bps",
                ),
                Q(
                    "sum by (target, job_name) "
                    f"{new_events(s('sigma_job_errors_total'), '$__range')}",
                    column="New errors",
                    unit="short",
                    # A channel that has logged no error line yet has no
                    # sigma_job_errors_total series: its cell stays blank.
                    empty_when_healthy=True,
                ),
                Q(
                    f"max by (target, job_name) ({s('sigma_job_errors_listed')})",
                    column="Errors listed",
                ),
                Q(
                    "max by (target, job_name) "
                    f"(round(increase({s('sigma_job_restarts_total')}[$__range])))",
                    column="Restarts in range",
                    range_reason="count of channel restarts over the shown period, not a rate",
                ),
            ],
            labels=("target", "job_name", "state"),
            h=12,
            columns=(
                Col("Up", mappings=tuple(UP_MAPPING), cell="color-background"),
                Col(
                    "Speed",
                    decimals=2,
                    cell="color-background",
                    thresholds=((None, "red"), (t.job_speed_ratio, "orange"), (1, "green")),
                ),
                Col("New errors", cell="color-text", thresholds=((None, "green"), (1, "orange"))),
                Col(
                    "Restarts in range",
                    decimals=0,
                    cell="color-text",
                    thresholds=((None, "green"), (1, "orange")),
                ),
            ),
            label_links={"job_name": [JOBS_LINK_FOR_ROW], "target": [SERVER_LINK]},
            sort_by=("Speed", False),
        )
    )
    b.add(
        state_timeline(
            "Channel up",
            "Per job: up (started or running) or down over time (sigma_job_up).",
            [Q(s("sigma_job_up"), CHANNEL)],
            UP_MAPPING,
            w=24,
            h=8,
        )
    )


def _speed(b: Board) -> None:
    """Speed against real time, and uptime."""
    b.row("Speed")
    b.add(
        timeseries(
            "Speed",
            "Processing speed per job relative to real time (sigma_job_speed). The red line "
            "is 1: below it the channel falls behind.",
            "none",
            [Q(s("sigma_job_speed"), CHANNEL)],
            w=16,
            min_=0,
            threshold_line=1,
            decimals=2,
        ),
        timeseries(
            "Uptime",
            "Uptime per job (sigma_job_uptime_seconds); a drop to zero is a restart.",
            "s",
            [Q(s("sigma_job_uptime_seconds"), CHANNEL)],
            w=8,
            min_=0,
        ),
    )


def _bitrates(b: Board) -> None:
    """Input, profile and output bitrates."""
    b.row("Bitrates")
    b.add(
        timeseries(
            "Input bitrate",
            "Bitrate of each job input (sigma_job_input_bytes_per_second x 8). A flat zero "
            "means the source stopped sending.",
            "bps",
            [Q(f"{s('sigma_job_input_bytes_per_second')} * 8", CHANNEL + " in {{input}}")],
            w=8,
            min_=0,
        ),
        timeseries(
            "Output profile bitrate",
            "Bitrate of each output profile (rendition) per job "
            "(sigma_job_profile_bytes_per_second x 8).",
            "bps",
            [Q(f"{s('sigma_job_profile_bytes_per_second')} * 8", CHANNEL + " profile {{profile}}")],
            w=8,
            min_=0,
        ),
        timeseries(
            "Output bitrate",
            "Bitrate of each job output by format (sigma_job_output_bytes_per_second x 8).",
            "bps",
            [
                Q(
                    f"{s('sigma_job_output_bytes_per_second')} * 8",
                    CHANNEL + " {{output}} ({{format}})",
                )
            ],
            w=8,
            min_=0,
        ),
    )
    b.add(
        table(
            "Inputs",
            "Input URLs per job, with credentials and query removed (sigma_job_input_info).",
            [Q(f"max by (target, job_name, input, url) ({s('sigma_job_input_info')})")],
            labels=("target", "job_name", "input", "url"),
            h=6,
        )
    )


def _errors(b: Board) -> None:
    """Error lines and restarts."""
    b.row("Errors and restarts")
    b.add(
        timeseries(
            "Errors by code",
            "New error lines per rate window, per job and error code (sigma_job_errors_total, "
            "first lines of a code included; `unknown` when the line carries no code). Empty "
            "while no job logs errors.",
            "short",
            [
                Q(
                    "sum by (target, job_name, code) "
                    f"{new_events(s('sigma_job_errors_total'), '$__rate_interval')}",
                    CHANNEL + " {{code}}",
                )
            ],
            w=12,
            bars=True,
            empty_when_healthy=True,
        ),
        timeseries(
            "Error lines listed",
            "Error lines the server currently lists per job (sigma_job_errors_listed).",
            "none",
            [Q(s("sigma_job_errors_listed"), CHANNEL)],
            w=6,
            min_=0,
            decimals=0,
        ),
        timeseries(
            "Restarts",
            "Restarts per job and rate window (increase of sigma_job_restarts_total).",
            "none",
            [Q(f"increase({s('sigma_job_restarts_total')}[$__rate_interval])", CHANNEL)],
            w=6,
            bars=True,
            min_=0,
        ),
    )
