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
    behind_real_time,
    custom_variable,
    datasource_variable,
    firing_alerts,
    mean_speed,
    new_events,
    query_variable,
    restart_annotation,
    speed_colours,
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

# The channels the dashboard opens on: the $worst worst of the selected ones
# rather than every channel of every server. Down channels rank first (-1),
# then running ones by their speed averaged as the alert averages it; one that
# reports no speed ranks as 1. `@ end()` ranks once, at the end of the shown
# range, so a graph keeps the same channels from its left edge to its right.
WORST = (
    "bottomk($worst, "
    f"(max by (target, job_name) ({s('sigma_job_up')} @ end() == 0) - 1)"
    f" or max by (target, job_name) ({mean_speed(s('sigma_job_speed'), at='end()')})"
    f" or max by (target, job_name) ({s('sigma_job_up')} @ end())"
    ")"
)
WORST_CHOICES = ("5", "10", "20", "50", "100", "1000")


def worst(expr: str) -> str:
    """`expr` (a per-channel query) kept to the worst channels (WORST)."""
    return f"{expr} and on (target, job_name) {WORST}"


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
            custom_variable("worst", "Worst channels shown", WORST_CHOICES, "10"),
        ],
    )
    b.annotations.append(
        restart_annotation(
            "Channel restarts",
            s("sigma_job_restarts_total"),
            ("target", "job_name"),
            "Channel restarted",
            keep=WORST,
        )
    )
    _overview(b, t)
    _speed(b)
    _bitrates(b)
    _errors(b)
    return b.render()


def _overview(b: Board, t: Thresholds) -> None:
    """Counts, the channels table and up/down over time."""
    behind = behind_real_time(s("sigma_job_speed"), s("sigma_job_up"), t.job_speed_ratio)
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
            "Running selected jobs whose speed averaged over 5 minutes (sigma_job_speed) "
            f"is below {t.job_speed_ratio}, where SigmaJobBehindRealtime fires.",
            "none",
            [Q(f"count({behind}) or vector(0)")],
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
            "Worst channels",
            "The worst selected jobs (as many as `Worst channels shown`; down first, then "
            "the slowest): state, speed (1 = real time; averaged over 5 minutes as "
            "the alert does, and now), uptime, start time, total "
            "input and output bitrate, new errors per minute, error lines listed now and "
            "restarts during the shown range. Click a job to show only it.",
            [
                Q(worst(f"max by (target, job_name) ({s('sigma_job_up')})"), column="Up"),
                Q(worst(f"max by (target, job_name, state) ({s('sigma_job_state')})")),
                Q(
                    worst(f"max by (target, job_name) ({mean_speed(s('sigma_job_speed'))})"),
                    column="Speed (5 min mean)",
                ),
                Q(worst(f"max by (target, job_name) ({s('sigma_job_speed')})"), column="Speed now"),
                Q(
                    worst(f"max by (target, job_name) ({s('sigma_job_uptime_seconds')})"),
                    column="Uptime",
                    unit="s",
                ),
                Q(
                    worst(
                        "max by (target, job_name) "
                        f"({s('sigma_job_start_timestamp_seconds')}) * 1000"
                    ),
                    column="Started",
                    unit="dateTimeAsIso",
                ),
                Q(
                    worst(
                        f"sum by (target, job_name) ({s('sigma_job_input_bytes_per_second')}) * 8"
                    ),
                    column="Input",
                    unit="bps",
                ),
                Q(
                    worst(
                        f"sum by (target, job_name) ({s('sigma_job_output_bytes_per_second')}) * 8"
                    ),
                    column="Output",
                    unit="bps",
                ),
                Q(
                    worst("sum by (target, job_name) "
                    f"{new_events(s('sigma_job_errors_total'), '$__range')}"),
                    column="New errors",
                    unit="short",
                    # A channel that has logged no error line yet has no
                    # sigma_job_errors_total series: its cell stays blank.
                    empty_when_healthy=True,
                ),
                Q(
                    worst(f"max by (target, job_name) ({s('sigma_job_errors_listed')})"),
                    column="Errors listed",
                ),
                Q(
                    worst("max by (target, job_name) "
                    f"(round(increase({s('sigma_job_restarts_total')}[$__range])))"),
                    column="Restarts in range",
                    range_reason="count of channel restarts over the shown period, not a rate",
                ),
            ],
            labels=("target", "job_name", "state"),
            h=12,
            columns=(
                Col("Up", mappings=tuple(UP_MAPPING), cell="color-background"),
                Col(
                    "Speed (5 min mean)",
                    decimals=2,
                    cell="color-background",
                    thresholds=speed_colours(t.job_speed_ratio),
                ),
                Col("Speed now", decimals=2),
                Col("New errors", cell="color-text", thresholds=((None, "green"), (1, "orange"))),
                Col(
                    "Restarts in range",
                    decimals=0,
                    cell="color-text",
                    thresholds=((None, "green"), (1, "orange")),
                ),
            ),
            label_links={"job_name": [JOBS_LINK_FOR_ROW], "target": [SERVER_LINK]},
            sort_by=("Speed (5 min mean)", False),
        )
    )
    # `...|"`: also the alerts that name no server, or no channel (the server's own).
    b.add(firing_alerts('target=~"$target|", job_name=~"$job|"', h=5))
    b.add(
        state_timeline(
            "Channel up",
            "Per job: up (started or running) or down over time (sigma_job_up).",
            [Q(worst(s("sigma_job_up")), CHANNEL)],
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
            [Q(worst(s("sigma_job_speed")), CHANNEL)],
            w=8,
            min_=0,
            threshold_line=1,
            decimals=2,
        ),
        timeseries(
            "Media time advance",
            "Seconds of media time (PTS, sigma_job_media_time_seconds) a job produces per "
            "second; it should hover at the red line, 1. A running job at 0 is frozen even "
            "when its speed still reads 1. rate() fits: PTS only grows, and starts again "
            "from 0 when the job restarts, which rate() treats as the reset it is.",
            "none",
            [Q(worst(f"rate({s('sigma_job_media_time_seconds')}[$__rate_interval])"), CHANNEL)],
            w=8,
            min_=0,
            threshold_line=1,
            decimals=2,
        ),
        timeseries(
            "Uptime",
            "Uptime per job (sigma_job_uptime_seconds); a drop to zero is a restart.",
            "s",
            [Q(worst(s("sigma_job_uptime_seconds")), CHANNEL)],
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
            [Q(worst(f"{s('sigma_job_input_bytes_per_second')} * 8"), CHANNEL + " in {{input}}")],
            w=8,
            min_=0,
        ),
        timeseries(
            "Output profile bitrate",
            "Bitrate of each output profile (rendition) per job "
            "(sigma_job_profile_bytes_per_second x 8).",
            "bps",
            [
                Q(
                    worst(f"{s('sigma_job_profile_bytes_per_second')} * 8"),
                    CHANNEL + " profile {{profile}}",
                )
            ],
            w=8,
            min_=0,
        ),
        timeseries(
            "Output bitrate",
            "Bitrate of each job output by format (sigma_job_output_bytes_per_second x 8).",
            "bps",
            [
                Q(
                    worst(f"{s('sigma_job_output_bytes_per_second')} * 8"),
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
            [Q(worst(f"max by (target, job_name, input, url) ({s('sigma_job_input_info')})"))],
            labels=("target", "job_name", "input", "url"),
            h=6,
        )
    )


def _errors(b: Board) -> None:
    """Error lines and restarts."""
    b.row("Errors and restarts")
    b.add(
        timeseries(
            "Errors by class",
            "New error lines per rate window, per job and class of their code "
            "(sigma_job_errors_by_class_total): input is the feed, output the CDN, origin, "
            "disk or network, processing the Sigma host, config the channel's settings, "
            "unknown a code Sigma does not document. A code in two classes counts in both. "
            "Who to call for each: the runbooks' job states and error classes.",
            "short",
            [
                Q(
                    worst("sum by (target, job_name, class) "
                    f"{new_events(s('sigma_job_errors_by_class_total'), '$__rate_interval')}"),
                    CHANNEL + " {{class}}",
                )
            ],
            w=12,
            bars=True,
            empty_when_healthy=True,
        ),
        timeseries(
            "Errors by code",
            "New error lines per rate window, per job and error code (sigma_job_errors_total, "
            "first lines of a code included; `unknown` when the line carries no code). Empty "
            "while no job logs errors.",
            "short",
            [
                Q(
                    worst("sum by (target, job_name, code) "
                    f"{new_events(s('sigma_job_errors_total'), '$__rate_interval')}"),
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
            [Q(worst(s("sigma_job_errors_listed")), CHANNEL)],
            w=12,
            min_=0,
            decimals=0,
        ),
        timeseries(
            "Restarts",
            "Restarts per job and rate window (increase of sigma_job_restarts_total).",
            "none",
            [Q(worst(f"increase({s('sigma_job_restarts_total')}[$__rate_interval])"), CHANNEL)],
            w=12,
            bars=True,
            min_=0,
        ),
    )
