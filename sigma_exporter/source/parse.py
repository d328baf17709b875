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
from sigma_exporter.source.gpufields import GPU_FIELDS
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

# Label values are capped: an answer must not be able to blow up a scrape.
MAX_LABEL_LENGTH = 256
# Lists are capped for the same reason (a GPU list of a million entries); a
# list cut at its cap is reported as a parse error of its path.
MAX_ITEMS = 1024
# GPU fields with a meaning of their own; every other numeric field is
# exported as reported under its own name.
_GPU_KNOWN = frozenset({"index", "name", *(f.sigma_key for f in GPU_FIELDS)})
_FIELD_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


def text(value: object) -> str | None:
    """A label-safe string: valid UTF-8, bounded length; numbers become text."""
    if type(value) is str and len(value) <= MAX_LABEL_LENGTH and value.isascii():
        return value  # the common case: ASCII has no lone surrogates to clean
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return str(value) if abs(value) < 10**18 else None
    if isinstance(value, float):
        return f"{value:g}" if value == value else None
    if not isinstance(value, str):
        return None
    # Lone surrogates (legal in JSON escapes) cannot be written out as UTF-8.
    cleaned = value.encode("utf-8", "replace").decode("utf-8")
    return cleaned[:MAX_LABEL_LENGTH]


class Budget:
    """How many more entries (list items, GPU fields, task states, jobs) one
    answer may yield. Caps per list multiply when lists nest; this bounds the
    whole answer, so what one server sends costs at most this many series
    (and their memory) before the poller refuses the rest."""

    __slots__ = ("exceeded", "left")

    def __init__(self, entries: int | None) -> None:
        self.left = entries
        self.exceeded = False

    def take(self, wanted: int) -> int:
        """How many of `wanted` entries may be read; the rest is over budget."""
        if self.left is None:
            return wanted
        granted = min(wanted, self.left)
        self.left -= granted
        if granted < wanted:
            self.exceeded = True
        return granted


class _Fields:
    """Case-insensitive view of one JSON object that records parse errors."""

    __slots__ = ("_budget", "_errors", "_items", "_path")

    def __init__(self, obj: dict[str, Any], path: str, errors: list[str],
                 budget: Budget) -> None:
        try:
            # Reversed, so that of keys differing only in case the first wins.
            items = {key.lower(): value for key, value in reversed(obj.items())}
        except AttributeError:  # a non-string key (not from JSON): the slow way
            items = {}
            for key, value in obj.items():
                if isinstance(key, str):
                    items.setdefault(key.lower(), value)
        self._items = items
        self._path = path
        self._errors = errors
        self._budget = budget

    def _error(self, key: str) -> None:
        # Keys come from the server: clean them like a label value (no lone
        # surrogates, bounded) before they become the `field` label.
        self._errors.append(text(f"{self._path}{key}") or "?")

    def get(
        self, key: str, convert: Callable[[object], V | None], required: bool = False
    ) -> V | None:
        """The converted value of `key`; None (and an error) when unreadable."""
        raw = self._items.get(key)
        if raw is None:  # absent (an error only when required) or null
            if required or key in self._items:
                self._error(key)
            return None
        value = convert(raw)
        if value is None:
            self._error(key)
        return value

    def child(self, key: str, required: bool = False) -> _Fields | None:
        raw = self._items.get(key)
        if isinstance(raw, dict):
            return _Fields(raw, f"{self._path}{key}.", self._errors, self._budget)
        if key in self._items or required:
            self._error(key)
        return None

    def _list(self, key: str) -> list[Any]:
        """The entries of a list field (capped); null or a non-list is an error."""
        raw = self._items.get(key)
        if isinstance(raw, list):
            if len(raw) > MAX_ITEMS:
                self._error(key)  # cut at its cap: counted, not silent
            return raw[:self._budget.take(min(len(raw), MAX_ITEMS))]
        if key in self._items:
            self._error(key)
        return []

    def items(self, key: str) -> list[_Fields]:
        """The objects of a list field; non-objects inside are errors."""
        out = []
        path = f"{self._path}{key}[]."
        for entry in self._list(key):
            if isinstance(entry, dict):
                out.append(_Fields(entry, path, self._errors, self._budget))
            else:
                self._error(f"{key}[]")
        return out

    def strings(self, key: str) -> list[str]:
        """The strings of a list field (numbers are accepted as text)."""
        out = []
        for entry in self._list(key):
            value = text(entry)
            if value is None:
                self._error(f"{key}[]")
            else:
                out.append(value)
        return out

    def has(self, key: str) -> bool:
        return key in self._items

    def raw_items(self) -> list[tuple[str, Any]]:
        """Every key and value, as many as the answer's budget still allows."""
        items = list(self._items.items())
        return items[:self._budget.take(len(items))]


def _lower_text(value: object) -> str | None:
    result = text(value)
    return result.lower() if result is not None else None


def _process(fields: _Fields | None) -> ProcessStats | None:
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


def _gpu(fields: _Fields, position: int) -> Gpu:
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


def _codecs(dump: _Fields) -> tuple[Codec, ...]:
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


def _tasks(dump: _Fields) -> tuple[tuple[str, float], ...]:
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
    dump = _Fields(obj, "", errors, budget)
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
                state=app.get("state", _lower_text),
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


def _job(name: str, fields: _Fields) -> Job:
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
        outputs.append(
            JobOutput(
                index=str(position),
                format=entry.get("format", _lower_text) or "",
                bytes_per_second=_bits_to_bytes(entry.get("bitrate", units.number)),
            )
        )
    errors: tuple[str, ...] | None = None
    if fields.has("error"):
        errors = tuple(fields.strings("error"))
    startup: datetime | None = fields.get("startup", units.local_datetime)
    return Job(
        name=name,
        state=fields.get("state", _lower_text),
        speed=fields.get("speed", units.number),
        uptime_seconds=fields.get("life", units.duration_seconds),
        media_time_seconds=fields.get("pts", units.duration_seconds),
        startup_local=startup,
        weight=fields.get("weight", units.number),
        errors=errors,
        inputs=tuple(inputs),
        profiles=_unique_by(profiles, lambda p: p.id),
        outputs=tuple(outputs),
    )


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
        jobs.append(_job(name, _Fields(raw_job, "job.", errors, budget)))
    return Parsed(Progress(tuple(jobs), dropped), tuple(errors), budget.exceeded)
