"""The incidents the alert rules must page for, and the quiet hours they must not.

Writes alerts/tests/incidents/*.yml: one promtool test file per incident of
issue 14 plus the quiet ones. Run it after a rule or metric change and review
the diff like code:

    .venv/bin/python tests/incidents.py           # rewrite every file
    .venv/bin/python tests/incidents.py NAME ...  # only these

Input series are what a real scrape of sigma-exporter holds for one Sigma host
with two GPUs and two channels: the exposition the exporter's own code renders
for a simulated server (`base_samples`, agent mode adds the NVML series), with
`job="sigma"` and `instance` as Prometheus adds them, replayed every 15 s
while a script changes the world (a channel's media time freezes, the host
dies, ...). Prometheus' own behaviour is kept: a series that disappears, or
every series of a failed scrape, gets a staleness marker; counters reset when
the exporter restarts; counters with open label values (parse errors by
field) are born at their first increment.

Each file starts with the operator's expectation in words and asserts it:
alerts that must fire (exact label sets; annotations are filled in from the
rules by running promtool once, so the file pins them too) and alerts that
must stay quiet. tests/ops/test_alerts.py runs every file.
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from feed import Fed  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from sigma_exporter import __version__  # noqa: E402
from sigma_exporter.agent.crosscheck import CrossCheck  # noqa: E402
from sigma_exporter.agent.nvml import DriverInfo, GpuReading  # noqa: E402
from sigma_exporter.agent.source import NvmlSource  # noqa: E402
from sigma_exporter.collect import exposition  # noqa: E402
from sigma_exporter.config import OutputRoot, OutputsConfig, TargetConfig  # noqa: E402
from sigma_exporter.metrics import BY_NAME  # noqa: E402
from sigma_exporter.outputs.source import OutputsSource  # noqa: E402
from sigma_exporter.sim.dump import render_dump  # noqa: E402
from sigma_exporter.sim.hls import TARGET_DURATION, HlsWriter  # noqa: E402
from sigma_exporter.sim.model import make_servers  # noqa: E402
from sigma_exporter.sim.progress import render_progress  # noqa: E402
from sigma_exporter.source.client import Answer  # noqa: E402
from sigma_exporter.source.errorcodes import classes_of  # noqa: E402
from sigma_exporter.source.jobstates import UP_STATES, state_label  # noqa: E402
from sigma_exporter.source.parse import parse_dump  # noqa: E402

OUT = ROOT / "alerts" / "tests" / "incidents"
ALERTS = ROOT / "alerts" / "sigma-alerts.yml"
STEP = 15  # scrape and evaluation interval, seconds
JOB, TARGET = "sigma", "sigma-01"
AGENT_INSTANCE = "sigma-host-1:9877"  # agent mode: the exporter on the Sigma host
CENTRAL_INSTANCE = "sigma-exporter:9877"  # one exporter polling remote servers
CHANNELS = ("VTV3", "HTV7")  # HTV7 has two outputs: HLS and an RTMP push
SIM_EPOCH = 1767225600.0
SIM_NOW = SIM_EPOCH + 1234.0

Labels = tuple[tuple[str, str], ...]
Key = tuple[str, Labels]


# --- the exposition of a healthy host -------------------------------------------


class Driver:
    """An NVML backend that reads the given figures."""

    def __init__(self, readings: tuple[GpuReading, ...]) -> None:
        self.readings = readings

    def init(self) -> DriverInfo:
        return DriverInfo("550.54.15", len(self.readings))

    def read(self) -> tuple[GpuReading, ...]:
        return self.readings

    def close(self) -> None:
        return None


def base_samples(agent: bool) -> list[tuple[str, dict[str, str], float]]:
    """(name, labels, value) of one scrape: two GPUs, the two channels, NVML if agent."""
    server = make_servers(1, gpus=2, jobs=3, seed=1, epoch=SIM_EPOCH)[0]
    dump_body = render_dump(server, SIM_NOW)
    gpus = parse_dump(dump_body).value.gpus
    readings = tuple(
        GpuReading(
            index=int(g.index), uuid=f"GPU-5e1d0c2a-0000-4000-8000-00000000000{g.index}",
            name=g.name, pci_bus_id=f"00000000:{0x17 + int(g.index):02X}:00.0",
            memory_total_bytes=g.memory_total_bytes, memory_used_bytes=g.memory_used_bytes,
            utilization_ratio=g.utilization_ratio, memory_utilization_ratio=0.04,
            encoder_utilization_ratio=g.encoder_utilization_ratio,
            decoder_utilization_ratio=g.decoder_utilization_ratio, encoder_sessions=2.0,
            encoder_fps=25.0, encoder_latency_seconds=0.0012,
            temperature_celsius=g.temperature_celsius, power_watts=31.5,
            video_clock_hz=1.545e9, power_limit_watts=72.0, xid_errors=0.0, last_xid=0.0,
            ecc_uncorrected_errors=0.0, row_remap_pending=0.0, row_remap_failure=0.0,
            throttle_reasons=1.0)
        for g in gpus)
    # Agent mode: the real NVML source over a driver that reads these figures.
    nvml = [NvmlSource(TARGET, Driver(readings), CrossCheck(target=TARGET))] if agent else []
    config = TargetConfig(name=TARGET, url="http://127.0.0.1:9999")
    with tempfile.TemporaryDirectory(prefix="sigma-incidents-") as folder:
        # The channels' HLS, written by the simulator for a minute, read by the
        # real outputs source (as agent mode reads it; central mode's series
        # are the same).
        writer = HlsWriter(folder, [server])
        for n in range(121):
            writer.tick(SIM_NOW - 60 + n / 2)
        root = OutputRoot(folder)
        outputs = OutputsSource(config, [root], OutputsConfig(roots=(root,)),
                                clock=lambda: SIM_NOW)
        fed = Fed(config, extra=[*nvml, outputs])
        fed.round(Answer(dump_body, SIM_NOW, 0.0125),
                  Answer(render_progress(server, SIM_NOW), SIM_NOW, 0.0045))
    state = fed.state
    text = exposition.merge([state.published.rendered], False).decode()
    out: list[tuple[str, dict[str, str], float]] = []
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.labels.get("job_name", CHANNELS[0]) in CHANNELS:
                out.append((s.name, dict(s.labels), float(s.value)))
    # The exporter's own series (serve.py renders them beside the targets').
    out += [("sigma_exporter_build_info", {"version": __version__, "revision": "0123abc",
                                           "python_version": "3.11.2"}, 1.0),
            ("sigma_targets", {}, 1.0),
            ("sigma_config_last_reload_successful", {}, 1.0),
            ("sigma_config_last_reload_success_timestamp_seconds", {}, -3600.0)]
    return out


# --- the world a script changes -------------------------------------------------


@dataclass
class Channel:
    base: str  # the channel whose base series it reuses
    state: str = "started"  # as Sigma reports it: starting, preparing, started, error, Stop
    speed: float = 1.0
    frozen: bool = False  # media time (PTS) stands still while it claims to run
    media: float = 22150.0
    uptime: float = 22149.0
    restarts: int = 0
    zero_outputs: set[str] = field(default_factory=set)
    unparsable: bool = False  # its state field no longer parses: no up/state series
    # New error lines per code since the exporter started, beyond the base scrape's.
    errors: dict[str, int] = field(default_factory=dict)

    @property
    def up(self) -> bool:
        return state_label(self.state) in UP_STATES

    def log(self, code: str, lines: int = 1) -> None:
        self.errors[code] = self.errors.get(code, 0) + lines
    # Its HLS output, as the packager writes it: media written to the playlists
    # (2 s segments), when the newest segment came, the exporter's counter.
    out_media: float = 22150.0
    out_frozen: bool = False  # the packager stops (a full ramdisk, a stuck packager)
    out_ended: bool = False  # EXT-X-ENDLIST while Sigma says the job runs
    last_segment: float = 0.0
    segments: int = 0
    overlong: int = 0  # segments longer than the target duration, listed now
    missing: int = 0  # listed segments not there
    renditions_gone: set[str] = field(default_factory=set)


@dataclass
class World:
    t: int = 0
    scraped: bool = True  # the scrape of the exporter succeeds
    discovered: bool = True  # the exporter is a target of Prometheus at all
    sigma_up: bool = True
    progress_up: bool = True
    nvml_up: bool = True
    server_start: float = -22287.0
    server_restarts: int = 0
    sigma_gpus: set[str] = field(default_factory=lambda: {"0", "1"})
    nvml_gpus: set[str] = field(default_factory=lambda: {"0", "1"})
    xid: dict[str, tuple[int, int]] = field(default_factory=dict)
    poll_errors: dict[tuple[str, str], int] = field(default_factory=dict)
    parse_errors: dict[str, int] = field(default_factory=dict)
    last_success: float = 0.0
    jobs_dropped: int = 0
    license_status: str = "VALID"
    control_plane_connected: bool = True
    control_plane_since: float | None = None  # None: with the server process
    channels: dict[str, Channel] = field(
        default_factory=lambda: {c: Channel(c) for c in CHANNELS})

    def restart_exporter(self) -> None:
        """Its counters start again from 0; the error lines Sigma lists are counted once."""
        self.server_restarts = 0
        self.poll_errors = {}
        self.parse_errors = {}
        self.xid = {}
        for ch in self.channels.values():
            ch.restarts = 0
            ch.errors = {}  # only the lines Sigma lists are counted again (in the base)
            ch.segments = 0

    def restart_channel(self, ch: Channel) -> None:
        ch.media, ch.uptime = 1.0, 0.0
        ch.restarts += 1
        ch.out_media, ch.out_ended, ch.last_segment = 0.0, False, float(self.t)


Script = Callable[[World], None]


def _advance(w: World) -> None:
    for ch in w.channels.values():
        if ch.up:
            ch.uptime += STEP
            if not ch.frozen:
                ch.media += STEP * ch.speed
                if not (ch.out_frozen or ch.out_ended):
                    _write_segments(w, ch, STEP * ch.speed)
    if w.sigma_up and w.scraped:
        w.last_success = float(w.t)


def _write_segments(w: World, ch: Channel, media: float) -> None:
    """The packager writes `media` seconds: a segment each TARGET_DURATION of them."""
    before = math.floor(ch.out_media / TARGET_DURATION)
    ch.out_media += media
    after = math.floor(ch.out_media / TARGET_DURATION)
    if after > before and ch.speed > 0:
        ch.segments += after - before
        # When the newest segment was complete, at the channel's speed.
        ch.last_segment = w.t - (ch.out_media - after * TARGET_DURATION) / ch.speed


def _fail_poll(w: World) -> None:
    for source, reason in (("dump", "connect"), ("progress", "connect"),
                           ("outputs", "progress_down")):
        key = (source, reason)
        w.poll_errors[key] = w.poll_errors.get(key, 0) + 1


def _value(w: World, name: str, labels: dict[str, str], value: float,
           agent: bool) -> float | None:
    """This step's value of a base series, or None when the scrape has none."""
    d = BY_NAME[name] if name in BY_NAME else BY_NAME[name + "_total"]
    gpu = labels.get("gpu")
    if d.source == "self":
        return value
    if d.source == "health":
        special: dict[str, float] = {
            "sigma_up": float(w.sigma_up),
            "sigma_progress_up": float(w.sigma_up and w.progress_up),
            "sigma_nvml_up": float(w.nvml_up),
            "sigma_outputs_up": float(w.sigma_up and w.progress_up),
            "sigma_last_poll_success_timestamp_seconds": w.last_success,
            "sigma_server_restarts_total": float(w.server_restarts),
        }
        if name == "sigma_poll_errors_total":
            return float(w.poll_errors.get((labels["source"], labels["reason"]), 0))
        return special.get(name, value)
    if d.source == "nvml":
        if not (agent and w.nvml_up):
            return None
        if name.startswith("sigma_gpu_crosscheck"):  # needs both sides this round
            if not w.sigma_up or gpu not in (w.sigma_gpus & w.nvml_gpus):
                return None
            return value
        if gpu is not None and gpu not in w.nvml_gpus:
            return None
        if name == "sigma_nvml_gpu_xid_errors_total":
            return float(w.xid.get(gpu or "", (0, 0))[0])
        if name == "sigma_nvml_gpu_last_xid":
            return float(w.xid.get(gpu or "", (0, 0))[1])
        return value
    if not w.sigma_up:
        return None
    if d.source == "dump":
        if gpu is not None and gpu not in w.sigma_gpus:
            return None
        if name == "sigma_server_start_timestamp_seconds":
            return w.server_start
        if name == "sigma_control_plane_connected":
            return float(w.control_plane_connected)
        if name == "sigma_control_plane_connect_timestamp_seconds":
            since = w.control_plane_since
            return w.server_start + 0.136 if since is None else since
        if name == "sigma_host_stats_timestamp_seconds":
            return float(w.t)
        if name == "sigma_jobs":
            return float(len(w.channels))
        if name == "sigma_tasks":
            return float(sum(ch.up for ch in w.channels.values()))
        return value
    if not w.progress_up:  # progress, and the outputs that read it
        return None
    if name == "sigma_jobs_dropped":
        return float(w.jobs_dropped)
    return value


def _output_value(w: World, ch: Channel, name: str, labels: dict[str, str],
                  value: float) -> float | None:
    """An outputs series of a channel: only while it runs (a stopped job's outputs
    are not read), renditions gone have none."""
    if not ch.up or ch.unparsable or labels.get("rendition") in ch.renditions_gone:
        return None
    age = max(0.0, w.t - ch.last_segment)
    live = {
        "sigma_output_playlist_age_seconds": age,
        "sigma_output_stale": float(age > 1.5 * TARGET_DURATION and not ch.out_ended),
        "sigma_output_ended": float(ch.out_ended),
        "sigma_output_media_sequence": float(max(0, math.floor(ch.out_media
                                                               / TARGET_DURATION) - 5)),
        "sigma_output_segments_total": float(ch.segments),
        "sigma_output_media_seconds_total": float(ch.segments * TARGET_DURATION),
        "sigma_output_segments_overlong": float(ch.overlong),
        "sigma_output_segments_missing": float(ch.missing),
    }
    if name == "sigma_output_renditions":
        return value - sum(1 for r in ch.renditions_gone)
    return live.get(name, value)


def _job_value(ch: Channel, name: str, labels: dict[str, str], value: float) -> float | None:
    if name == "sigma_job_up":
        return None if ch.unparsable else float(ch.up)
    if name == "sigma_job_speed":
        return ch.speed if ch.up else 0.0
    if name == "sigma_job_uptime_seconds":
        return ch.uptime
    if name == "sigma_job_media_time_seconds":
        return ch.media
    if name == "sigma_job_start_timestamp_seconds":
        return -ch.uptime  # relative to promtool's time 0; moves on a restart
    if name == "sigma_job_restarts_total":
        return float(ch.restarts)
    if name in ("sigma_job_input_bytes_per_second", "sigma_job_profile_bytes_per_second"):
        return value if ch.up else 0.0
    if name == "sigma_job_output_bytes_per_second":
        return value if ch.up and labels["output"] not in ch.zero_outputs else 0.0
    if name == "sigma_job_errors_total":
        return value + ch.errors.get(labels["code"], 0)
    if name == "sigma_job_errors_by_class_total":
        return value + sum(n for code, n in ch.errors.items()
                           if labels["class"] in classes_of(code))
    return value


def scrape(w: World, base: list[tuple[str, dict[str, str], float]], agent: bool,
           instance: str) -> dict[Key, float]:
    """The samples Prometheus stores for this step (with `up`)."""
    out: dict[Key, float] = {}
    prom = {"job": JOB, "instance": instance}
    if w.discovered:
        out[("up", tuple(sorted(prom.items())))] = float(w.scraped)
    if not (w.discovered and w.scraped):
        return out

    def put(name: str, labels: dict[str, str], value: float | None) -> None:
        if value is not None:
            out[(name, tuple(sorted({**prom, **labels}.items())))] = value

    for name, labels, value in base:
        v = _value(w, name, labels, value, agent)
        if name == "sigma_license_status":  # the status is a label: a new one, a new series
            put(name, {**labels, "status": w.license_status}, v)
            continue
        job = labels.get("job_name")
        if v is None or job is None:
            put(name, labels, v)
            continue
        for current, ch in w.channels.items():
            if ch.base != job:
                continue
            renamed = {**labels, "job_name": current}
            if name == "sigma_job_state":
                if not ch.unparsable:
                    put(name, {**renamed, "state": state_label(ch.state)}, 1.0)
            elif name.startswith("sigma_output"):
                put(name, renamed, _output_value(w, ch, name, labels, v))
            else:
                put(name, renamed, _job_value(ch, name, labels, v))
    # A code the base scrape has no series of: its counter is born at its first lines.
    if w.sigma_up and w.progress_up:
        base_codes = {(labels["job_name"], labels["code"]) for name, labels, _ in base
                      if name == "sigma_job_errors_total"}
        for current, ch in w.channels.items():
            for code, count in ch.errors.items():
                if (ch.base, code) not in base_codes and not ch.unparsable:
                    put("sigma_job_errors_total",
                        {"target": TARGET, "job_name": current, "code": code}, float(count))
    if w.sigma_up:
        for path, count in w.parse_errors.items():  # born at the first error
            put("sigma_parse_errors_total", {"target": TARGET, "field": path}, float(count))
    return out


# --- promtool's series notation -------------------------------------------------


def _num(v: float) -> str:
    text = f"{v:.10g}"
    return text if "e" not in text else repr(v)


def notation(values: list[float | str | None]) -> str:
    """Values (None: no sample, "stale": a staleness marker) in promtool's notation."""
    out: list[str] = []
    i = 0
    while i < len(values):
        v = values[i]
        if v is None:
            j = i
            while j < len(values) and values[j] is None:
                j += 1
            out.append("_" if j - i == 1 else f"_x{j - i}")
            i = j
            continue
        if isinstance(v, str):
            out.append(v)
            i += 1
            continue
        # The longest arithmetic run from i: a+bxN covers N+1 values.
        j = i + 1
        step: float | None = None
        while j < len(values):
            nxt = values[j]
            if not isinstance(nxt, float):
                break
            d = round(nxt - float(values[j - 1] or 0.0), 9)
            if step is None:
                step = d
            elif d != step:
                break
            j += 1
        n = j - i - 1
        if n == 0:
            out.append(_num(v))
        elif not step:
            out.append(f"{_num(v)}x{n}")
        else:
            sign = "+" if step > 0 else "-"
            out.append(f"{_num(v)}{sign}{_num(abs(step))}x{n}")
        i = j
    return " ".join(out)


def _series_text(key: Key) -> str:
    name, labels = key
    inner = ", ".join(f'{k}="{v}"' for k, v in labels)
    return f"{name}{{{inner}}}"


# --- incidents ----------------------------------------------------------------


@dataclass
class Expect:
    """At `minute`, alert `alert` fires with exactly these label sets (none: quiet)."""

    minute: float
    alert: str
    fired: list[dict[str, str]] = field(default_factory=list)


@dataclass
class Incident:
    name: str
    title: str
    expectation: str  # the operator's expectation, in words
    minutes: int
    script: Callable[[World], None]
    expects: list[Expect]
    agent: bool = True
    quiet_alerts: tuple[str, ...] = ()  # must stay quiet at every `quiet_minutes`
    quiet_minutes: tuple[float, ...] = ()

    @property
    def instance(self) -> str:
        return AGENT_INSTANCE if self.agent else CENTRAL_INSTANCE


def _all_alerts() -> list[str]:
    doc = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    names = [r["alert"] for g in doc["groups"] for r in g["rules"] if "alert" in r]
    return sorted(set(names))


def _severity(alert: str) -> set[str]:
    doc = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    return {r["labels"]["severity"] for g in doc["groups"] for r in g["rules"]
            if r.get("alert") == alert}


def pages() -> tuple[str, ...]:
    return tuple(a for a in _all_alerts() if "critical" in _severity(a))


def play(incident: Incident) -> dict[Key, list[float | str | None]]:
    base = base_samples(incident.agent)
    w = World()
    steps = incident.minutes * 60 // STEP + 1
    frames: list[dict[Key, float]] = []
    for i in range(steps):
        w.t = i * STEP
        if i:
            _advance(w)
        incident.script(w)
        if not w.sigma_up and w.scraped:
            _fail_poll(w)
        frames.append(scrape(w, base, incident.agent, incident.instance))
    keys: dict[Key, None] = {}
    for frame in frames:
        keys.update(dict.fromkeys(frame))
    series: dict[Key, list[float | str | None]] = {}
    for key in keys:
        values: list[float | str | None] = []
        seen = False
        for frame in frames:
            if key in frame:
                values.append(frame[key])
                seen = True
            elif seen and values and not (values[-1] is None or values[-1] == "stale"):
                values.append("stale")  # Prometheus marks a vanished series stale
            else:
                values.append(None)
        while values and values[-1] is None:
            values.pop()
        series[key] = values
    return series


def _labels(instance: str, **extra: str) -> dict[str, str]:
    return {"job": JOB, "instance": instance, "target": TARGET, **extra}


def render(incident: Incident, annotations: dict[tuple[str, float], list[dict[str, str]]]
           ) -> str:
    series = play(incident)
    tests: list[dict[str, Any]] = []
    checks: list[dict[str, Any]] = []
    for e in incident.expects:
        ann = annotations.get((e.alert, e.minute), [])
        exp = []
        for n, labels in enumerate(e.fired):
            item: dict[str, Any] = {"exp_labels": labels}
            if n < len(ann):
                item["exp_annotations"] = ann[n]
            exp.append(item)
        checks.append({"eval_time": _minutes(e.minute), "alertname": e.alert,
                       "exp_alerts": exp})
    expected = {(e.alert, e.minute) for e in incident.expects}
    for minute in incident.quiet_minutes:
        for alert in incident.quiet_alerts:
            if (alert, minute) not in expected:
                checks.append({"eval_time": _minutes(minute), "alertname": alert,
                               "exp_alerts": []})
    tests.append({
        "interval": f"{STEP}s",
        "input_series": [{"series": _series_text(k), "values": notation(v)}
                         for k, v in sorted(series.items())],
        "alert_rule_test": checks,
    })
    doc = {"rule_files": ["../../sigma-recording.yml", "../../sigma-alerts.yml"],
           "evaluation_interval": f"{STEP}s",
           # Recording groups first: promtool's own order is random, and an alert
           # reading a recording rule would see the last evaluation's value by chance.
           "group_eval_order": group_eval_order(), "tests": tests}
    header = [f"# {incident.title}", "#"]
    header += [f"# {line}".rstrip() for line in incident.expectation.strip().splitlines()]
    header += ["#", "# Written by tests/incidents.py from the exporter's own exposition of a",
               "# host with two GPUs and two channels (VTV3, HTV7), scraped every 15 s.",
               "# Do not edit by hand: change tests/incidents.py and run it.", ""]
    body = yaml.dump(doc, sort_keys=False, width=1000, allow_unicode=True)
    return "\n".join(header) + body


def group_eval_order() -> list[str]:
    """Every rule group, recording groups first, in file order (promtool's
    group_eval_order for the replays and the unit tests)."""
    return [group["name"] for path in (ALERTS.parent / "sigma-recording.yml", ALERTS)
            for group in yaml.safe_load(path.read_text())["groups"]]


def _minutes(m: float) -> str:
    seconds = round(m * 60)
    return f"{seconds // 60}m" if seconds % 60 == 0 else f"{seconds}s"


# --- annotations from the rules themselves --------------------------------------

_BLOCK = re.compile(r"alertname: (\S+), time: (\S+), \n(.*?)(?=\n    alertname: |\Z)", re.S)
_PAIR = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def _go_labels(text: str) -> dict[str, str]:
    return {k: bytes(v, "utf-8").decode("unicode_escape").encode("latin-1").decode("utf-8")
            for k, v in _PAIR.findall(text)}


Annotations = dict[tuple[str, float], list[dict[str, str]]]


def fill_annotations(incident: Incident, path: Path) -> Annotations:
    """Annotations of the expected alerts, as promtool renders them from the rules."""
    promtool = shutil.which("promtool")
    if promtool is None:
        raise SystemExit("promtool not found (Debian: apt-get install prometheus)")
    res = subprocess.run([promtool, "test", "rules", str(path)], capture_output=True, text=True,
                         timeout=300, check=False)
    found: dict[tuple[str, float], list[dict[str, str]]] = {}
    for alert, time_text, block in _BLOCK.findall(res.stdout + res.stderr):
        got = block.split("got:", 1)[-1]
        entries = re.findall(r"Labels:(\{.*?\})\n\s*Annotations:(\{.*?\}),?\n", got)
        minute = _parse_duration(time_text) / 60
        expect = next((e for e in incident.expects
                       if e.alert == alert and abs(e.minute - minute) < 1e-9), None)
        if expect is None:
            continue
        by_labels = {tuple(sorted((k, v) for k, v in _go_labels(lb).items()
                                  if k != "alertname")): _go_labels(an) for lb, an in entries}
        ordered = []
        for labels in expect.fired:
            ann = by_labels.get(tuple(sorted(labels.items())))
            if ann is None:
                break
            ordered.append(ann)
        found[(alert, expect.minute)] = ordered
    return found


def _parse_duration(text: str) -> float:
    total = 0.0
    for n, unit in re.findall(r"(\d+(?:\.\d+)?)(d|h|ms|m|s)", text):
        total += float(n) * {"d": 86400, "h": 3600, "m": 60, "s": 1, "ms": 0.001}[unit]
    return total


def write(incident: Incident) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{incident.name}.yml"
    path.write_text(render(incident, {}), encoding="utf-8")
    path.write_text(render(incident, fill_annotations(incident, path)), encoding="utf-8")
    return path


# --- the incidents of issue 14 --------------------------------------------------


def at(w: World, minute: float) -> bool:
    return w.t == round(minute * 60)


def between(w: World, start: float, end: float | None = None) -> bool:
    return start * 60 <= w.t and (end is None or w.t < end * 60)


def every(minutes: Iterable[float]) -> tuple[float, ...]:
    return tuple(minutes)




def _job(instance: str, job_name: str, **extra: str) -> dict[str, str]:
    return {"severity": "critical", **_labels(instance, job_name=job_name), **extra}


def _host_dies(w: World) -> None:
    if at(w, 10):
        w.channels["VTV3"].state = "error"  # a channel page is open when the host dies
    if at(w, 20):
        w.scraped = False  # power gone: the exporter on the host dies with it


def _exporter_dies(w: World) -> None:
    if at(w, 10):
        w.scraped = False


def _target_dropped(w: World) -> None:
    if at(w, 10):
        w.discovered = False


def _frozen(w: World) -> None:
    w.channels["VTV3"].frozen = between(w, 10, 40)


def _crash_loop(w: World) -> None:
    ch = w.channels["HTV7"]
    if between(w, 10, 40):
        phase = (w.t - 600) % 105  # down 90 s, up 15 s
        if phase == 0:
            ch.state = "error"
        elif phase == 90:
            w.restart_channel(ch)
            ch.state = "started"
    elif at(w, 40):
        ch.state = "started"


def _vanished(w: World) -> None:
    if at(w, 10):  # renamed in Sigma's UI
        w.channels["HTV7-HD"] = w.channels.pop("HTV7")
    if at(w, 30):  # cut by jobs.max (or deleted)
        del w.channels["VTV3"]
        w.jobs_dropped = 1


def _output_dropped(w: World) -> None:
    w.channels["HTV7"].zero_outputs = {"1"} if between(w, 10, 40) else set()


def _output_frozen(w: World) -> None:
    w.channels["VTV3"].out_frozen = between(w, 10, 40)


def _output_ended(w: World) -> None:
    w.channels["VTV3"].out_ended = between(w, 10, 30)


def _rendition_vanished(w: World) -> None:
    w.channels["HTV7"].renditions_gone = {"480/index.m3u8"} if between(w, 10) else set()


def _overlong(w: World) -> None:
    w.channels["VTV3"].overlong = 1 if between(w, 10, 40) else 0


def _drift(w: World) -> None:
    _healthy(w)
    if between(w, 10):
        w.channels["VTV3"].speed = 0.95 + (JITTER[(w.t // STEP) % len(JITTER)] - 1.0) / 2


def _half_speed(w: World) -> None:
    w.channels["VTV3"].speed = 0.5 if between(w, 10, 14) else 1.0


def _gpu_off_bus(w: World) -> None:
    if at(w, 10):
        w.xid["1"] = (1, 79)  # Xid 79: GPU has fallen off the bus
    if at(w, 10.25):
        w.sigma_gpus.discard("1")
        w.nvml_gpus.discard("1")


def _format_change(w: World) -> None:
    if between(w, 10):
        for ch in w.channels.values():
            ch.unparsable = True
            key = "progress.job.state"
            w.parse_errors[key] = w.parse_errors.get(key, 0) + 1


def _restart_through(w: World, ch: Channel, minute: float, states: list[tuple[str, float]]
                     ) -> None:
    """At `minute` the channel restarts, then reports each (state, for minutes) in turn."""
    if at(w, minute):
        w.restart_channel(ch)
    t = minute
    for state, minutes in states:
        if at(w, t):
            ch.state = state
        t += minutes


def _channel_coming_up(w: World) -> None:
    # After four and a half healthy hours (history, as a real Prometheus has:
    # 75 s off air is then well within the error budget's 3-day and 6-hour
    # windows), HTV7 restarts and comes up slowly.
    _restart_through(w, w.channels["HTV7"], 270,
                     [("starting", 1.0), ("preparing", 0.25), ("started", 0)])


def _channel_stuck_starting(w: World) -> None:
    _restart_through(w, w.channels["VTV3"], 10, [("starting", 0.5), ("preparing", 0)])


def _channel_error(w: World) -> None:
    ch = w.channels["VTV3"]
    if at(w, 10):
        ch.state = "error"  # its feed is gone: Sigma retries, logging INPUT_TIMEOUT
    if between(w, 10):  # a line every 10 s: 2, then 1 new line per 15 s scrape
        ch.log("INPUT_TIMEOUT", 2 if w.t % 30 == 0 else 1)


def _output_errors(w: World) -> None:
    if between(w, 10, 30) and w.t % 60 == 0:  # the CDN refuses its push now and then
        w.channels["HTV7"].log("OUTPUT_TIMEOUT", 3)


JITTER = (1.0, 0.98, 1.02, 0.99, 1.01, 1.0, 1.02, 0.98)


def _healthy(w: World) -> None:
    for n, ch in enumerate(w.channels.values()):
        ch.speed = JITTER[(w.t // STEP + 3 * n) % len(JITTER)]


def _sigma_restart(w: World) -> None:
    _healthy(w)
    if at(w, 120):
        w.sigma_up = False  # planned restart: 45 s without an answer
    if at(w, 120.75):
        w.sigma_up = True
        w.server_start = float(w.t - 5)
        w.server_restarts += 1
        for ch in w.channels.values():
            w.restart_channel(ch)
            ch.state = "starting"
    if at(w, 121):
        for ch in w.channels.values():
            ch.state = "started"


def _exporter_restart(w: World) -> None:
    _healthy(w)
    if at(w, 20):
        w.scraped = False  # the exporter restarts between two scrapes
    if at(w, 20.25):
        w.scraped = True
        w.restart_exporter()


def _licence_lapses(w: World) -> None:
    if at(w, 10):
        w.license_status = "EXPIRED"
    if at(w, 40):
        w.license_status = "VALID"  # renewed


def _control_plane_down(w: World) -> None:
    if at(w, 10):
        w.control_plane_connected = False
    if at(w, 50):
        w.control_plane_connected = True
        w.control_plane_since = float(w.t)  # the link came up again: a new startup


def _incidents() -> list[Incident]:
    a, c = AGENT_INSTANCE, CENTRAL_INSTANCE
    everything = tuple(_all_alerts())
    paging = pages()

    def quiet(*fired: str) -> tuple[str, ...]:
        return tuple(x for x in paging if x not in fired)

    exporter = {"severity": "critical", "job": JOB, "instance": a}
    return [
        Incident(
            "host-dies-agent",
            "Agent mode: the Sigma host dies (power, kernel panic); its exporter dies with it.",
            """
Operator expects: a critical page within 5 minutes (SigmaExporterDown), which
keeps paging while the host is dead. Channel VTV3 went down 10 minutes before:
its page (SigmaJobDown, and its error-budget page) stays open while the host is
dead instead of resolving because its series went stale; Alertmanager hands it
over to the host page (inhibition). No other page.
""",
            125, _host_dies,
            [Expect(19, "SigmaJobDown", [_job(a, "VTV3")]),
             Expect(19, "SigmaJobErrorBudgetFastBurn", [_job(a, "VTV3")]),
             Expect(19, "SigmaExporterDown", []),
             Expect(25, "SigmaExporterDown", [exporter]),
             Expect(25, "SigmaExporterAbsent", [{"severity": "critical", "job": JOB}]),
             Expect(25, "SigmaJobDown", [_job(a, "VTV3")]),
             Expect(25, "SigmaJobErrorBudgetFastBurn", [_job(a, "VTV3")]),
             Expect(120, "SigmaExporterDown", [exporter]),
             Expect(120, "SigmaJobDown", [_job(a, "VTV3")]),
             Expect(120, "SigmaJobErrorBudgetFastBurn", [_job(a, "VTV3")])],
            quiet_alerts=quiet("SigmaJobDown", "SigmaJobErrorBudgetFastBurn",
                               "SigmaExporterDown", "SigmaExporterAbsent"),
            quiet_minutes=(19, 25, 60, 120)),
        Incident(
            "exporter-dies-central",
            "The central exporter dies (process killed, OOM, node lost).",
            """
Operator expects: a critical page within 5 minutes (SigmaExporterDown, and
SigmaExporterAbsent as it was the only exporter), paging for as long as it is
dead. No Sigma alert pretends a server or channel failed.
""",
            70, _exporter_dies,
            [Expect(12, "SigmaExporterDown", []),
             Expect(15, "SigmaExporterDown", [{**exporter, "instance": c}]),
             Expect(15, "SigmaExporterAbsent", [{"severity": "critical", "job": JOB}]),
             Expect(70, "SigmaExporterDown", [{**exporter, "instance": c}]),
             Expect(70, "SigmaExporterAbsent", [{"severity": "critical", "job": JOB}])],
            agent=False, quiet_alerts=quiet("SigmaExporterDown", "SigmaExporterAbsent"),
            quiet_minutes=(15, 70)),
        Incident(
            "exporter-target-dropped",
            "The exporter's scrape target drops out of service discovery.",
            """
Operator expects: a critical page within 5 minutes naming the exporter that
vanished (SigmaExporterTargetMissing; SigmaExporterAbsent as it was the only
one), still paging 3 hours later. `up` itself is gone, so `up == 0` alone
would never fire.
""",
            185, _target_dropped,
            [Expect(15, "SigmaExporterTargetMissing", [{**exporter, "instance": c}]),
             Expect(15, "SigmaExporterAbsent", [{"severity": "critical", "job": JOB}]),
             Expect(180, "SigmaExporterTargetMissing", [{**exporter, "instance": c}]),
             Expect(180, "SigmaExporterAbsent", [{"severity": "critical", "job": JOB}])],
            agent=False,
            quiet_alerts=quiet("SigmaExporterTargetMissing", "SigmaExporterAbsent"),
            quiet_minutes=(15, 180)),
        Incident(
            "channel-frozen",
            "A channel says `running` at speed 1 but its media time (PTS) stopped.",
            """
Operator expects: SigmaJobStalled pages for VTV3 within 5 minutes of the
freeze (minute 10) and keeps paging while it is frozen (until minute 40);
it resolves once the media time moves again. Without media there are no
segments: its playlists stop changing and SigmaOutputStale pages for its
HLS output within 2 minutes, till it moves again. HTV7 stays quiet.
""",
            50, _frozen,
            [Expect(14, "SigmaJobStalled", [_job(a, "VTV3")]),
             Expect(39, "SigmaJobStalled", [_job(a, "VTV3")]),
             Expect(45, "SigmaJobStalled", []),
             # No media, no segments: its playlists stop changing too.
             Expect(12, "SigmaOutputStale", [_job(a, "VTV3", output="0")]),
             Expect(39, "SigmaOutputStale", [_job(a, "VTV3", output="0")]),
             Expect(45, "SigmaOutputStale", [])],
            quiet_alerts=quiet("SigmaJobStalled", "SigmaOutputStale"),
            quiet_minutes=(14, 39, 45)),
        Incident(
            "channel-crash-loop",
            "A channel crash-loops: down 90 s, up 15 s, for half an hour.",
            """
Operator expects: HTV7 pages within 10 minutes of the first crash (minute 10)
as crash-looping (SigmaJobCrashLooping; its availability error budget burns
too) and keeps paging while it loops, whatever the speed average does.
SigmaJobDown never fires (no down stretch lasts 2 minutes); VTV3 stays quiet.
""",
            45, _crash_loop,
            [Expect(20, "SigmaJobCrashLooping", [_job(a, "HTV7")]),
             Expect(39, "SigmaJobCrashLooping", [_job(a, "HTV7")]),
             Expect(20, "SigmaJobErrorBudgetFastBurn", [_job(a, "HTV7")]),
             Expect(39, "SigmaJobErrorBudgetFastBurn", [_job(a, "HTV7")])],
            quiet_alerts=quiet("SigmaJobCrashLooping", "SigmaJobErrorBudgetFastBurn"),
            quiet_minutes=every(range(10, 41, 2))),
        Incident(
            "channel-vanished",
            "A channel is renamed, another is cut by jobs.max, while the server is up.",
            """
Operator expects: a warning (chat) within 10 minutes for each channel that
vanished while its server answers (SigmaJobVanished): HTV7 renamed to HTV7-HD
at minute 10, VTV3 cut by jobs.max at minute 30. Each warns for an hour. No
page: nothing says the channel is down, only that it is gone.
""",
            80, _vanished,
            [Expect(17, "SigmaJobVanished", [{**_job(a, "HTV7"), "severity": "warning"}]),
             Expect(37, "SigmaJobVanished", [{**_job(a, "HTV7"), "severity": "warning"},
                                             {**_job(a, "VTV3"), "severity": "warning"}]),
             Expect(75, "SigmaJobVanished", [{**_job(a, "VTV3"), "severity": "warning"}])],
            quiet_alerts=paging, quiet_minutes=(17, 37, 75)),
        Incident(
            "output-dropped",
            "One of a channel's two outputs (the RTMP push) drops to 0.",
            """
Operator expects: SigmaJobOutputDown pages for HTV7's output 1 (rtmp) within
5 minutes, judged on its own although the HLS output still carries data, and
keeps paging while it is at 0.
""",
            45, _output_dropped,
            [Expect(14, "SigmaJobOutputDown", [_job(a, "HTV7", output="1", format="rtmp")]),
             Expect(39, "SigmaJobOutputDown", [_job(a, "HTV7", output="1", format="rtmp")]),
             Expect(44, "SigmaJobOutputDown", [])],
            quiet_alerts=quiet("SigmaJobOutputDown"), quiet_minutes=(14, 39, 44)),
        Incident(
            "output-frozen",
            "A running channel's packager stops writing (a full ramdisk, a stuck packager).",
            """
Operator expects: Sigma still says VTV3 runs at speed 1, but its playlists
stopped changing at minute 10: SigmaOutputStale pages within 2 minutes for
its HLS output, keeps paging while it is frozen (until minute 40) and
resolves once segments come again. Nothing else pages.
""",
            50, _output_frozen,
            [Expect(11, "SigmaOutputStale", []),
             Expect(12, "SigmaOutputStale", [_job(a, "VTV3", output="0")]),
             Expect(39, "SigmaOutputStale", [_job(a, "VTV3", output="0")]),
             Expect(42, "SigmaOutputStale", [])],
            quiet_alerts=quiet("SigmaOutputStale"), quiet_minutes=every(range(10, 50, 2))),
        Incident(
            "output-ended",
            "A running channel's playlist gets EXT-X-ENDLIST (the packager ended).",
            """
Operator expects: VTV3's playlists say the stream ended (EXT-X-ENDLIST) at
minute 10 while Sigma says it runs: SigmaOutputEnded pages within 2 minutes
and keeps paging until a live playlist is back (minute 30). An ended
playlist is not called stale; nothing else pages.
""",
            40, _output_ended,
            [Expect(12, "SigmaOutputEnded", [_job(a, "VTV3", output="0")]),
             Expect(29, "SigmaOutputEnded", [_job(a, "VTV3", output="0")]),
             Expect(32, "SigmaOutputEnded", [])],
            quiet_alerts=quiet("SigmaOutputEnded"), quiet_minutes=every(range(10, 40, 2))),
        Incident(
            "output-rendition-vanished",
            "One rendition of a running channel's HLS output disappears.",
            """
Operator expects: HTV7's 480 rendition is gone from its output at minute 10
(dropped from the master, its playlist gone) while the rest plays: a
warning (chat) within 10 minutes (SigmaOutputRenditionVanished) that lasts
while it is gone, within the hour. No page.
""",
            45, _rendition_vanished,
            [Expect(17, "SigmaOutputRenditionVanished", [
                {**_job(a, "HTV7", output="0", rendition="480/index.m3u8"),
                 "severity": "warning"}]),
             Expect(40, "SigmaOutputRenditionVanished", [
                 {**_job(a, "HTV7", output="0", rendition="480/index.m3u8"),
                  "severity": "warning"}])],
            quiet_alerts=paging, quiet_minutes=every(range(10, 45, 5))),
        Incident(
            "output-overlong-segments",
            "A channel's packager writes segments longer than the target duration.",
            """
Operator expects: from minute 10 VTV3's playlist lists a segment longer than
its target duration (a keyframe interval longer than the segments): a
warning within 10 minutes (SigmaOutputSegmentsOverlong) while it lasts. No
page: players cope, some stall.
""",
            45, _overlong,
            [Expect(17, "SigmaOutputSegmentsOverlong", [
                {**_job(a, "VTV3", output="0", rendition=r), "severity": "warning"}
                for r in ("128k/index.m3u8", "480/index.m3u8", "720/index.m3u8")])],
            quiet_alerts=paging, quiet_minutes=every(range(10, 45, 5))),
        Incident(
            "channel-drift-095",
            "A channel runs at 0.95x real time: 3 s of media lost every minute.",
            """
Operator expects: from minute 10 VTV3 runs at 0.95 (jittering as live jobs
do) and its output gains 0.95 s of media a second: a live-edge player with
three segments of buffer stalls within minutes. SigmaJobBehindRealtime pages
within 10 minutes of the drift starting (by its speed or its output,
whichever tells first) and keeps paging. No other page: the playlists keep
changing, they are just late.
""",
            40, _drift,
            [Expect(17, "SigmaJobBehindRealtime", []),
             Expect(19.5, "SigmaJobBehindRealtime", [_job(a, "VTV3")]),
             Expect(39, "SigmaJobBehindRealtime", [_job(a, "VTV3")])],
            quiet_alerts=quiet("SigmaJobBehindRealtime"),
            quiet_minutes=every(range(10, 40, 2))),
        Incident(
            "channel-half-speed",
            "A channel runs at half speed for 4 minutes.",
            """
Operator expects: a page within 4 minutes (SigmaJobStalled: the 2-minute
mean speed is far below real time), resolved a few minutes after the channel
recovers. Viewers saw a stuttering channel; the slow-drift alert
SigmaJobBehindRealtime is not the one to catch it.
""",
            30, _half_speed,
            [Expect(13, "SigmaJobStalled", [_job(a, "VTV3")]),
             Expect(20, "SigmaJobStalled", [])],
            quiet_alerts=quiet("SigmaJobStalled"), quiet_minutes=(13, 20, 25)),
        Incident(
            "gpu-off-bus",
            "A GPU falls off the bus (Xid 79); Sigma and the driver lose it.",
            """
Operator expects: a warning within 10 minutes (SigmaGPUMissing) that keeps
firing while the GPU is gone: still at minute 75 and at 3 hours, not
clearing itself after an hour. The Xid event itself is reported
(SigmaGPUXidErrors). No page from the GPU alone.
""",
            185, _gpu_off_bus,
            [Expect(11, "SigmaGPUXidErrors", [
                {"severity": "warning", **_labels(a, gpu="1")}]),
             Expect(20, "SigmaGPUMissing", [{"severity": "warning", **_labels(a)}]),
             Expect(75, "SigmaGPUMissing", [{"severity": "warning", **_labels(a)}]),
             Expect(180, "SigmaGPUMissing", [{"severity": "warning", **_labels(a)}])],
            quiet_alerts=paging, quiet_minutes=(20, 75, 180)),
        Incident(
            "field-format-change",
            "Sigma changes a field's format; the channels' job series vanish.",
            """
Operator expects: a page within 15 minutes that monitoring is blind
(SigmaMonitoringBlind, reason channel_fields_unparsable, naming the field),
since no channel page can fire meanwhile; each vanished channel warns too.
""",
            30, _format_change,
            [Expect(17, "SigmaJobVanished", [{**_job(a, "HTV7"), "severity": "warning"},
                                             {**_job(a, "VTV3"), "severity": "warning"}]),
             Expect(19, "SigmaMonitoringBlind", []),
             Expect(21, "SigmaMonitoringBlind", [
                 {"severity": "critical", **_labels(a), "blind": "channel_fields_unparsable",
                  "field": "progress.job.state"}])],
            quiet_alerts=quiet("SigmaMonitoringBlind"), quiet_minutes=(17, 21, 29)),
        Incident(
            "licence-lapsed",
            "A server's licence lapses: its status turns EXPIRED for half an hour.",
            """
Operator expects: a critical page within 6 minutes naming the status
(SigmaLicenseNotValid, status EXPIRED), paging while the licence is not
valid, resolved once the server reports VALID again. Sigma stops serving
when its licence lapses; if it stops the channels, their own pages follow.
Here the channels still run: no other page.
""",
            45, _licence_lapses,
            [Expect(14, "SigmaLicenseNotValid", []),
             Expect(16, "SigmaLicenseNotValid", [
                 {"severity": "critical", **_labels(a), "status": "EXPIRED"}]),
             Expect(39, "SigmaLicenseNotValid", [
                 {"severity": "critical", **_labels(a), "status": "EXPIRED"}]),
             Expect(41, "SigmaLicenseNotValid", [])],
            quiet_alerts=quiet("SigmaLicenseNotValid"), quiet_minutes=(14, 16, 39, 41)),
        Incident(
            "control-plane-down",
            "A server's link to Sigma's control plane (NATS) drops for 40 minutes.",
            """
Operator expects: a warning (chat) within 16 minutes of the drop
(SigmaControlPlaneDisconnected), firing while the link is down and resolved
once it is back. No page: the channels keep running.
""",
            55, _control_plane_down,
            [Expect(24, "SigmaControlPlaneDisconnected", []),
             Expect(26, "SigmaControlPlaneDisconnected", [
                 {"severity": "warning", **_labels(a)}]),
             Expect(49, "SigmaControlPlaneDisconnected", [
                 {"severity": "warning", **_labels(a)}]),
             Expect(51, "SigmaControlPlaneDisconnected", [])],
            quiet_alerts=paging, quiet_minutes=(24, 26, 49, 51)),
        Incident(
            "channel-stuck-starting",
            "A channel restarts and never gets past `preparing` (its input cannot be probed).",
            """
Operator expects: VTV3, coming up since minute 10 (starting for 30 s, then
preparing), is not down at first: a restart is not an outage. Once it has gone
3 minutes without running it counts as down, and SigmaJobDown pages 2 minutes
later (minute 15), as for any channel that is down, and keeps paging; its
error budget pages too. HTV7 stays quiet.
""",
            40, _channel_stuck_starting,
            [Expect(14, "SigmaJobDown", []),
             Expect(16, "SigmaJobDown", [_job(a, "VTV3")]),
             Expect(39, "SigmaJobDown", [_job(a, "VTV3")]),
             Expect(39, "SigmaJobErrorBudgetFastBurn", [_job(a, "VTV3")])],
            quiet_alerts=quiet("SigmaJobDown", "SigmaJobErrorBudgetFastBurn"),
            quiet_minutes=(14, 16, 39)),
        Incident(
            "channel-error",
            "A channel goes to `error`: its feed is gone, Sigma retries and logs INPUT_TIMEOUT.",
            """
Operator expects: VTV3, in state `error` from minute 10, pages like a channel
that is down (SigmaJobDown within 3 minutes; its error budget pages too) and
keeps paging. Its error lines are input-class: SigmaJobErrorBurst warns with
class input (the feed: call the contribution provider); Alertmanager mutes that
warning under the page. HTV7 stays quiet.
""",
            40, _channel_error,
            [Expect(11, "SigmaJobDown", []),
             Expect(13, "SigmaJobDown", [_job(a, "VTV3")]),
             Expect(39, "SigmaJobDown", [_job(a, "VTV3")]),
             Expect(20, "SigmaJobErrorBurst",
                    [{**_job(a, "VTV3"), "severity": "warning", "class": "input"}]),
             Expect(39, "SigmaJobErrorBudgetFastBurn", [_job(a, "VTV3")])],
            quiet_alerts=quiet("SigmaJobDown", "SigmaJobErrorBudgetFastBurn"),
            quiet_minutes=(13, 20, 39)),
        Incident(
            "output-errors",
            "A running channel's push to the CDN times out now and then: OUTPUT_TIMEOUT lines.",
            """
Operator expects: HTV7 keeps running (nothing pages) while it logs 3
output-class lines a minute from minute 10 to 30; SigmaJobErrorBurst warns
(chat) with class output (CDN, origin, disk, network), not input, within 10
minutes, and clears once the lines stop.
""",
            50, _output_errors,
            [Expect(19, "SigmaJobErrorBurst",
                    [{**_job(a, "HTV7"), "severity": "warning", "class": "output"}]),
             Expect(29, "SigmaJobErrorBurst",
                    [{**_job(a, "HTV7"), "severity": "warning", "class": "output"}]),
             Expect(45, "SigmaJobErrorBurst", [])],
            quiet_alerts=paging, quiet_minutes=(19, 29, 45)),
        Incident(
            "quiet-channel-starting",
            "A channel restarts and comes up slowly: starting for a minute, then preparing.",
            """
Operator expects: no page and no warning. After four and a half healthy hours
HTV7 restarts (minute 270): it is starting for a minute, then preparing for
15 s, then runs again. A channel coming up is not down, and its media time is
judged only once it has run for 2 minutes (no SigmaJobStalled while it
catches up).
""",
            285, _channel_coming_up, [],
            quiet_alerts=everything, quiet_minutes=every([*range(269, 280), 285])),
        Incident(
            "quiet-healthy-hour",
            "A healthy hour: speeds jitter between 0.98 and 1.02.",
            """
Operator expects: nothing at all, no page, no warning, no info.
""",
            60, _healthy, [],
            quiet_alerts=everything, quiet_minutes=every(range(5, 61, 5))),
        Incident(
            "quiet-sigma-restart",
            "A planned Sigma restart: 45 s without an answer, every channel restarts.",
            """
Operator expects: no page, and no warning but the one that says the server
restarted (SigmaServerRestarted, chat). Channels come back on their own. The
restart comes after two healthy hours, as in a real Prometheus with history:
one scrape of a starting channel is not an error-budget ticket.
""",
            175, _sigma_restart,
            [Expect(122, "SigmaServerRestarted", [{"severity": "warning", **_labels(a)}]),
             Expect(135, "SigmaServerRestarted", [{"severity": "warning", **_labels(a)}]),
             Expect(140, "SigmaServerRestarted", [])],
            quiet_alerts=tuple(x for x in everything if x != "SigmaServerRestarted"),
            quiet_minutes=every([*range(119, 136), 140, 150, 170])),
        Incident(
            "quiet-exporter-restart",
            "The exporter restarts: one failed scrape, its counters start again from 0.",
            """
Operator expects: nothing at all.
""",
            45, _exporter_restart, [],
            quiet_alerts=everything, quiet_minutes=every([*range(19, 36), 40, 44])),
    ]


def main(argv: list[str]) -> int:
    chosen = set(argv)
    for incident in _incidents():
        if chosen and incident.name not in chosen:
            continue
        print("wrote", write(incident).relative_to(ROOT))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
