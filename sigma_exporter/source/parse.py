"""Pure functions from decoded Sigma JSON to frozen snapshots.

Keys match case-insensitively (`CPU`/`cpu`, `ID`/`id`, `System`/`system`).
A field that is present but `null` or unreadable is left out and its path
reported as a parse error; a missing optional field is simply absent. No JSON
value of any shape makes these functions raise: they only read what they
recognise, and every type is checked before use.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from sigma_exporter.redact import redact_url
from sigma_exporter.source import units
from sigma_exporter.source.fields import (
    MAX_ITEMS,
    MAX_LABEL_LENGTH,
    Budget,
    Fields,
    lower_text,
    text,
)
from sigma_exporter.source.gpufields import GPU_FIELDS
from sigma_exporter.source.jobstates import state_label
from sigma_exporter.source.snapshot import (
    App,
    Codec,
    Dump,
    Gpu,
    Job,
    JobInput,
    JobOutput,
    JobProfile,
    NetworkInterface,
    Parsed,
    ProcessStats,
    Progress,
    Storage,
)

V = TypeVar("V")

# GPU fields with a meaning of their own; every other numeric field is
# exported as reported under its own name.
_GPU_KNOWN = frozenset({"index", "name", *(f.sigma_key for f in GPU_FIELDS)})
_FIELD_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")

# A licence status becomes a label value: a word of letters and `_`, at most
# 32 of them, upper case (spaces and dashes read as `_`). Anything else, a
# sentence or a key-shaped string with digits, is carried as `other`.
_LICENSE_WORD = re.compile(r"^[A-Z][A-Z_]{0,31}$")
LICENSE_OTHER = "other"


def _process(fields: Fields | None) -> ProcessStats | None:
    if fields is None:
        return None
    return ProcessStats(
        cpu_ratio=fields.get("cpu", units.percent_ratio),
        resident_memory_bytes=fields.get("ram", units.size_bytes),
        children=fields.get("child", units.number),
    )


def _gpu_index(value: object) -> str | None:
    """A GPU index: a whole number in ASCII digits (`"²"` passes isdigit, not int)."""
    index = text(value)
    if index is None or not (index.isascii() and index.isdigit() and len(index) <= 6):
        return None
    return str(int(index))


def _gpu(fields: Fields, position: int) -> Gpu:
    index = fields.get("index", _gpu_index) or str(position)
    reported = []
    for key, raw in fields.raw_items():
        if key in _GPU_KNOWN or not _FIELD_NAME.match(key):
            continue
        if isinstance(raw, dict | list):
            continue  # nested data is not a figure
        value = units.number(raw)
        if value is None:
            if raw is not None and not isinstance(raw, str):
                # Undocumented keys are the server's: one bounded path for all.
                fields._error("other")
            continue
        reported.append((key, value))
    reported.sort()
    name = fields.get("name", text)
    figures = {f.attr: fields.get(f.sigma_key, f.convert) for f in GPU_FIELDS}
    return Gpu(index=index, name=name, reported=tuple(reported), **figures)


def _codecs(dump: Fields) -> tuple[Codec, ...]:
    codecs: list[Codec] = []
    seen: set[tuple[str, str, str]] = set()
    for position, device in enumerate(dump.items("supported")):
        name = device.get("name", text) or str(position)
        for key, direction in (("encoder", "encode"), ("decoder", "decode")):
            for codec in device.strings(key):
                ident = (name, direction, codec)
                if ident not in seen:  # a repeated entry must not duplicate a series
                    seen.add(ident)
                    codecs.append(Codec(name, direction, codec))
    return tuple(codecs)


def _tasks(dump: Fields) -> tuple[tuple[str, float], ...]:
    task = dump.child("task")
    if task is None:
        return ()
    out = []
    seen: set[str] = set()
    for state, raw in task.raw_items():
        count = units.number(raw)
        label = text(state)
        if count is None or not label:
            # The key is the server's: one bounded path for every bad state.
            dump._errors.append("task")
            continue
        label = label.lower()
        if label not in seen:  # "\ud800" and "\ud801" both clean to "?"
            seen.add(label)
            out.append((label, count))
    return tuple(sorted(out))


def _license_status(value: object) -> str | None:
    """`licenseStatus`, upper case; `other` when it is not a short word."""
    if not isinstance(value, str) or not value.strip():
        return None
    word = re.sub(r"[\s-]+", "_", value.strip()[:64]).upper()
    return word if word.isascii() and _LICENSE_WORD.match(word) else LICENSE_OTHER


def _tail(dump: Fields) -> dict[str, Any]:
    """The fields after `APPS`: licence, control-plane link, `dt`, `now`.

    Of `nats` only `connected`, `startup` and `hook` are read. `license` (the
    licence key: a secret) and `ID` are never looked at, so no error, label or
    log line can carry them.
    """
    reported = []
    dt = dump.get("dt", units.number)
    if dt is not None:
        reported.append(("dt", dt))
    tail: dict[str, Any] = {
        "license_status": dump.get("licensestatus", _license_status),
        "answer_timestamp": dump.get("now", units.iso_timestamp),
    }
    nats = dump.child("nats")
    if nats is not None:
        tail["control_plane_connected"] = nats.get("connected", units.flag)
        tail["control_plane_connect_timestamp"] = nats.get("startup", units.iso_timestamp)
        hook = nats.get("hook", units.number)
        if hook is not None:
            reported.append(("nats.hook", hook))
    tail["reported"] = tuple(reported)
    return tail


def _unique_by(items: list[V], key: Callable[[V], object]) -> tuple[V, ...]:
    """Keep the first of entries that would produce the same series."""
    seen: set[object] = set()
    out = []
    for item in items:
        ident = key(item)
        if ident not in seen:
            seen.add(ident)
            out.append(item)
    return tuple(out)


def parse_dump(obj: object, max_entries: int | None = None) -> Parsed[Dump]:
    """Read a decoded `dump` answer. Never raises.

    Past `max_entries` entries (see `Budget`) the rest is left unread and
    the result says `over_budget`.
    """
    errors: list[str] = []
    if not isinstance(obj, dict):
        return Parsed(Dump(), ("dump",))
    budget = Budget(max_entries)
    dump = Fields(obj, "", errors, budget)
    system = dump.child("system")

    networks: list[NetworkInterface] = []
    storages: list[Storage] = []
    gpus: list[Gpu] = []
    log_folder = log_used = None
    process = None
    host: dict[str, Any] = {}
    if system is not None:
        host = {
            "os": system.get("os", text),
            "cpu_cores": system.get("cores", units.number),
            "cpu_utilization_ratio": system.get("cpu", units.percent_ratio),
            "threads": system.get("thread", units.number),
            "memory_total_bytes": system.get("ramtotal", units.size_bytes),
            "memory_used_bytes": system.get("ramused", units.size_bytes),
            "swap_total_bytes": system.get("swaptotal", units.size_bytes),
            "swap_used_bytes": system.get("swapused", units.size_bytes),
            "stats_timestamp": system.get("updatetime", units.iso_timestamp),
        }
        for net in system.items("network"):
            name, address = net.get("name", text), net.get("ip", text)
            cidr = net.get("netmask", text)
            if name is not None:
                networks.append(NetworkInterface(name, address or "", cidr or ""))
        for position, store in enumerate(system.items("storage")):
            storages.append(
                Storage(
                    name=store.get("name", text) or str(position),
                    retention_seconds=store.get("time", units.duration_seconds),
                    cleanup_delay_seconds=store.get("delay", units.duration_seconds),
                    folders=tuple(dict.fromkeys(store.strings("folder"))),
                )
            )
        log = system.child("log")
        if log is not None:
            log_folder = log.get("folder", text)
            log_used = log.get("used", units.size_bytes)
        gpus = [_gpu(g, i) for i, g in enumerate(system.items("gpu"))]
        process = _process(system.child("process"))

    apps = []
    for position, app in enumerate(dump.items("apps")):
        apps.append(
            App(
                name=app.get("name", text) or str(position),
                state=app.get("state", lower_text),
                uptime_seconds=app.get("life", units.duration_seconds),
                process=_process(app.child("process")),
            )
        )

    snapshot = Dump(
        name=dump.get("name", text, required=True),
        version=dump.get("version", text, required=True),
        branch=dump.get("branch", text),
        hostname=dump.get("hostname", text),
        timezone=dump.get("timezone", _zone_name),
        build_timestamp=dump.get("build", units.iso_timestamp),
        start_timestamp=dump.get("start", units.iso_timestamp, required=True),
        local_timestamp=dump.get("local", units.iso_timestamp),
        speed=dump.get("speed", units.number),
        port=dump.get("port", units.number),
        jobs_queued=dump.get("queue", units.number),
        jobs_total=dump.get("total", units.number),
        tasks=_tasks(dump),
        codecs=_codecs(dump),
        networks=_unique_by(networks, lambda n: (n.name, n.address, n.cidr)),
        storages=_unique_by(storages, lambda s: s.name),
        log_folder=log_folder,
        log_used_bytes=log_used,
        gpus=_unique_by(gpus, lambda g: g.index),
        process=process,
        apps=_unique_by(apps, lambda a: a.name),
        **host,
        **_tail(dump),
    )
    if system is None:
        errors.append("system")
    return Parsed(snapshot, tuple(errors), budget.exceeded)


def _zone_name(value: object) -> str | None:
    """A time zone name we can convert with; unknown names are parse errors."""
    name = text(value)
    if name is None or units.zone(name) is None:
        return None
    return name


def _job_state(value: object) -> str | None:
    """A job's state as its label: lower case, short, plain characters (jobstates.py)."""
    reported = text(value)
    return state_label(reported) if reported is not None else None


def _job(name: str, fields: Fields) -> Job:
    inputs = []
    for position, entry in enumerate(fields.items("input")):
        url = entry.get("url", text)
        inputs.append(
            JobInput(
                index=str(position),
                url=redact_url(url, drop_query=True)[:MAX_LABEL_LENGTH] if url else None,
                bytes_per_second=_bits_to_bytes(entry.get("bitrate", units.number)),
            )
        )
    profiles = []
    for position, entry in enumerate(fields.items("profile")):
        profiles.append(
            JobProfile(
                id=entry.get("id", text) or str(position),
                bytes_per_second=_bits_to_bytes(entry.get("bitrate", units.number)),
            )
        )
    outputs = []
    for position, entry in enumerate(fields.items("target")):
        output_format = entry.get("format", lower_text) or ""
        folder = None
        select: tuple[str, ...] = ()
        if output_format in FOLDER_FORMATS:
            folder = _local_folder(entry.get("url", text))
            select = tuple(entry.strings("select"))[:MAX_SELECT]
        outputs.append(
            JobOutput(
                index=str(position),
                format=output_format,
                bytes_per_second=_bits_to_bytes(entry.get("bitrate", units.number)),
                folder=folder,
                select=select,
            )
        )
    errors: tuple[str, ...] | None = None
    if fields.has("error"):
        errors = tuple(fields.strings("error"))
    startup: datetime | None = fields.get("startup", units.wall_datetime)
    return Job(
        name=name,
        state=fields.get("state", _job_state),
        speed=fields.get("speed", units.number),
        uptime_seconds=fields.get("life", units.duration_seconds),
        media_time_seconds=fields.get("pts", units.duration_seconds),
        startup_wall=startup,
        weight=fields.get("weight", units.number),
        errors=errors,
        inputs=tuple(inputs),
        profiles=_unique_by(profiles, lambda p: p.id),
        outputs=tuple(outputs),
    )


# Output formats whose `url` is a local folder of playlists and segments
# (Sigma's API page: HLS and DASH; the others push to a URL).
FOLDER_FORMATS = frozenset({"hls", "dash"})
MAX_SELECT = 64


def _local_folder(url: str | None) -> str | None:
    """An HLS/DASH target's folder: an absolute local path, else None.

    Manifests kept on S3, HTTP or Redis have a URL here, which can carry
    credentials: it is not kept.
    """
    if not url or not url.startswith("/") or "://" in url or "\\" in url or "\0" in url:
        return None
    return url


def _bits_to_bytes(bits: float | None) -> float | None:
    return bits / 8.0 if bits is not None else None


def parse_progress(obj: object, wanted: Callable[[str], bool] | None = None,
                   max_jobs: int | None = None,
                   max_entries: int | None = None) -> Parsed[Progress] | None:
    """Read a decoded `progress` answer; None when it is not a progress answer.

    `result` maps job name to job. Only jobs whose name is `wanted`, and at
    most `max_jobs` of them, have their fields read: the rest are counted in
    `dropped` and cost nothing more. Every kept job and its list entries
    count against `max_entries` (see `Budget`). Field paths in errors use
    `job.` rather than the job name so that the error label stays bounded.
    """
    if not isinstance(obj, dict):
        return None
    top = {k.lower(): v for k, v in obj.items() if isinstance(k, str)}
    result = top.get("result")
    if not isinstance(result, dict):
        return None
    errors: list[str] = []
    jobs: list[Job] = []
    seen: set[str] = set()
    limit = MAX_ITEMS * 16 if max_jobs is None else min(max_jobs, MAX_ITEMS * 16)
    budget = Budget(max_entries)
    dropped = 0
    for position, (raw_name, raw_job) in enumerate(result.items()):
        if len(jobs) >= limit:  # the rest is left out unread
            dropped += len(result) - position
            break
        name = text(raw_name)
        if not name or name in seen:  # cleaning can make two names one series
            errors.append("result")
            continue
        seen.add(name)
        if wanted is not None and not wanted(name):
            dropped += 1
            continue
        if not isinstance(raw_job, dict):
            errors.append("job")
            continue
        if not budget.take(1):
            break  # over budget: the poller drops this answer's series anyway
        jobs.append(_job(name, Fields(raw_job, "job.", errors, budget)))
    return Parsed(Progress(tuple(jobs), dropped), tuple(errors), budget.exceeded)
