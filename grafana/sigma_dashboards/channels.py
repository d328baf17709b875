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
    _outputs(b)
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


RENDITION = CHANNEL + " {{output}} {{rendition}}"


def _outputs(b: Board) -> None:
    """The HLS/DASH playlists viewers get, per output and rendition (docs/outputs.md)."""
    b.row("Outputs (the playlists viewers get)")
    _output_stats(b)
    _output_graphs(b)
    _output_tables(b)


def _output_stats(b: Board) -> None:
    b.add(
        stat(
            "Stale playlists",
            "Renditions of the selected channels whose live playlist has not changed for "
            "longer than 1.5 target durations (sigma_output_stale; RFC 8216 6.2.1), where "
            "SigmaOutputStale pages.",
            "none",
            [Q(f"count({s('sigma_output_stale')} == 1) or vector(0)")],
            w=6,
            thresholds=((None, "green"), (1, "red")),
            color_mode="background",
        ),
        stat(
            "Ended playlists",
            "Renditions whose playlist says the stream ended (EXT-X-ENDLIST; DASH: a static "
            "manifest) while the channel runs: SigmaOutputEnded.",
            "none",
            [Q(f"count(({s('sigma_output_ended')} == 1) and on (target, job_name) "
               f"({s('sigma_job_up')} == 1)) or vector(0)")],
            w=6,
            thresholds=((None, "green"), (1, "red")),
            color_mode="background",
        ),
        stat(
            "Outputs not read",
            "Outputs of the selected channels whose playlists could not be read this round "
            "(sigma_output_up == 0; the reason in sigma_output_errors_total).",
            "none",
            [Q(f"count({s('sigma_output_up')} == 0) or vector(0)")],
            w=6,
            thresholds=((None, "green"), (1, "orange")),
            color_mode="background",
        ),
        stat(
            "Missing segments",
            "Segments listed by the selected channels' playlists that are not there "
            "(sigma_output_segments_missing).",
            "none",
            [Q(f"sum({s('sigma_output_segments_missing')}) or vector(0)")],
            w=6,
            thresholds=((None, "green"), (1, "orange")),
        ),
    )


def _output_graphs(b: Board) -> None:
    b.add(
        timeseries(
            "Playlist age against the target duration",
            "Seconds since each rendition's playlist last changed "
            "(sigma_output_playlist_age_seconds), and, dashed, its target duration "
            "(sigma_output_target_duration_seconds). A live playlist changes about once a "
            "target duration; past 1.5 of them it is stale (RFC 8216 6.2.1).",
            "s",
            [
                Q(worst(s("sigma_output_playlist_age_seconds")), RENDITION),
                Q(worst(s("sigma_output_target_duration_seconds")),
                  RENDITION + " target duration"),
            ],
            w=8,
            min_=0,
            dashed="target duration",
        ),
        timeseries(
            "Segments per minute",
            "New segments per minute in each rendition's playlist "
            "(sigma_output_segments_total), and, dashed, what real time gives "
            "(60 / the target duration). Fewer, lasting: the channel falls behind live.",
            "short",
            [
                Q(worst(f"rate({s('sigma_output_segments_total')}[$__rate_interval]) * 60"),
                  RENDITION),
                Q(worst(f"60 / {s('sigma_output_target_duration_seconds')}"),
                  RENDITION + " real time"),
            ],
            w=8,
            min_=0,
            dashed="real time",
        ),
        timeseries(
            "Newest segment bitrate against the declared one",
            "Each rendition's newest segment: size x 8 / duration "
            "(sigma_output_segment_bytes_per_second x 8), and, dashed, its declared peak "
            "(HLS BANDWIDTH, DASH @bandwidth; sigma_output_declared_bytes_per_second x 8). "
            "Only above the declared rate is a problem.",
            "bps",
            [
                Q(worst(f"{s('sigma_output_segment_bytes_per_second')} * 8"), RENDITION),
                Q(worst(f"{s('sigma_output_declared_bytes_per_second')} * 8"),
                  RENDITION + " declared"),
            ],
            w=8,
            min_=0,
            dashed="declared",
        ),
    )


def _output_tables(b: Board) -> None:
    by_rendition = "max by (target, job_name, output, rendition) "
    by_output = "max by (target, job_name, output) "
    b.add(
        timeseries(
            "Output speed",
            "Seconds of media each rendition's playlist gained per second "
            "(sigma_output_media_seconds_total, as a rate): the output's own speed against "
            "real time, whatever Sigma's speed says. SigmaJobBehindRealtime reads it too.",
            "none",
            [Q(worst(f"rate({s('sigma_output_media_seconds_total')}[$__rate_interval])"),
               RENDITION)],
            w=8,
            decimals=3,
        ),
        table(
            "Renditions",
            "Each rendition of the selected channels' outputs: its media sequence, the "
            "seconds of media it lists, segments longer than its target duration listed "
            "now, new discontinuities in the shown range, and (DASH) the manifest's "
            "minimumUpdatePeriod.",
            [
                Q(worst(by_rendition + f"({s('sigma_output_media_sequence')})"),
                  column="Media sequence"),
                Q(worst(by_rendition + f"({s('sigma_output_window_seconds')})"),
                  column="Window", unit="s"),
                Q(worst(by_rendition + f"({s('sigma_output_segments_overlong')})"),
                  column="Overlong segments"),
                Q(worst(by_rendition + "(" + new_events(
                    s("sigma_output_discontinuities_total"), "$__range") + ")"),
                  column="Discontinuities"),
                Q(worst(by_rendition + f"({s('sigma_output_update_period_seconds')})"),
                  column="DASH update period", unit="s"),
            ],
            labels=("target", "job_name", "output", "rendition"),
            w=16,
        ),
    )
    b.add(
        table(
            "Outputs",
            "Each HLS/DASH output of the selected channels: its folder under its root, "
            "renditions read (and left out of the job by outputs.max_renditions), and the "
            "rounds in the shown range it could not be read, by reason "
            "(sigma_output_errors_total; docs/outputs.md).",
            [
                Q(worst(f"max by (target, job_name, output, format, path) "
                        f"({s('sigma_output_info')})")),
                Q(worst(by_output + f"({s('sigma_output_renditions')})"),
                  column="Renditions"),
                Q(worst("max by (target, job_name) "
                        f"({s('sigma_output_renditions_dropped')})"),
                  column="Left out (job)"),
                Q(worst("sum by (target, job_name, output) (" + new_events(
                    s("sigma_output_errors_total"), "$__range") + ")"),
                  column="Unreadable rounds"),
            ],
            labels=("target", "job_name", "output", "format", "path"),
            h=6,
        ),
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
