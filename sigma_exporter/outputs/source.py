"""The `outputs` source: every channel's HLS and DASH playlists, as viewers get them.

Each round it awaits the round's `progress` (the jobs, and for each HLS or
DASH target its folder), maps each folder of a started job to a configured
root (`outputs.roots`; a folder under none is `outside_root` and is never
read), reads it (`folder.read_output`: on disk under the root in agent mode,
`local.py`; from the root's `url` in central mode, `origin.py`) and judges
each rendition (`judge.py`) against what it kept from the last round.

A problem of one output (a missing folder, a broken playlist, a hung read of
its root) is that output's counted error (`sigma_output_errors_total`, by
reason) and never another's. The source itself fails only when it cannot run
at all: no progress answer this round (`progress_down`), or every root's
read missed its deadline (`timeout`).

Disk reads block, and a dead network mount can block one for ever: each
root is read in a daemon thread of its own, and the round waits at most the
target's timeout for it (as the NVML source does, agent/source.py). The
outputs it finished by then count; the others are `timeout`. Until a stuck
read returns, no other starts for that root, and its outputs stay `timeout`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import posixpath
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import NamedTuple
from urllib.parse import quote

from sigma_exporter.collect.samples import UP_STATES_JOB, new_samples
from sigma_exporter.collect.source import Reading, Round, Source, SourceError
from sigma_exporter.config import Config, OutputRoot, OutputsConfig, TargetConfig
from sigma_exporter.outputs.folder import REASONS, FolderError, OutputRead, Seen, read_output
from sigma_exporter.outputs.judge import RenditionState, Verdict, judge
from sigma_exporter.outputs.local import LocalOutput, inside, read_root
from sigma_exporter.outputs.origin import Origin, OriginFolder
from sigma_exporter.source.client import SSLContexts
from sigma_exporter.source.fields import MAX_LABEL_LENGTH
from sigma_exporter.source.parse import FOLDER_FORMATS
from sigma_exporter.source.snapshot import Progress

SOURCE_REASONS = ("progress_down", "timeout")
# Findings listed on the status page per target, stale ones first.
MAX_FINDINGS = 50

OutputKey = tuple[str, str]  # (job name, output index)


class RenditionStatus(NamedTuple):
    """One rendition as the status page and `once` show it."""

    job: str
    output: str
    format: str
    rendition: str
    age: float
    limit: float | None
    stale: bool
    ended: bool


@dataclass(frozen=True, slots=True)
class OutputsReport:
    """The typed value of a round: every rendition read, and the outputs that were not."""

    # Every rendition read, as RenditionStatus' fields: plain tuples, 1,500 a round,
    # which the garbage collector leaves alone (a NamedTuple it does not).
    rows: tuple[tuple[str, str, str, str, float, float | None, bool, bool], ...] = ()
    unreadable: tuple[tuple[str, str, str], ...] = ()  # (job, output, "reason: message")

    @property
    def renditions(self) -> tuple[RenditionStatus, ...]:
        return tuple(RenditionStatus._make(row) for row in self.rows)

    @property
    def stale(self) -> tuple[RenditionStatus, ...]:
        return tuple(RenditionStatus._make(row) for row in self.rows if row[6])


@dataclass(frozen=True, slots=True)
class _Planned:
    job: str
    state: str | None
    output: str
    format: str
    root: OutputRoot | None
    relative: str  # the folder relative to its root ("" for the root itself)


@dataclass(slots=True)
class _Worker:
    """A root's disk read in its thread: results as they come, done when it returns."""

    future: concurrent.futures.Future[None]
    since: float
    results: list[tuple[object, OutputRead]] = field(default_factory=list)


def _label(text: str) -> str:
    if len(text) <= MAX_LABEL_LENGTH and text.isprintable():
        return text  # the common case, without a copy
    clean = "".join(c if c.isprintable() else "?" for c in text)
    return clean[:MAX_LABEL_LENGTH]


# The per-rendition families, in the order `_fixed_values` gives their values.
_RENDITION_FAMILIES = (
    "sigma_output_playlist_age_seconds", "sigma_output_target_duration_seconds",
    "sigma_output_stale", "sigma_output_ended", "sigma_output_media_sequence",
    "sigma_output_segments_total", "sigma_output_media_seconds_total",
    "sigma_output_discontinuities_total", "sigma_output_segments_overlong",
    "sigma_output_segments_missing", "sigma_output_window_seconds",
    "sigma_output_segment_bytes_per_second", "sigma_output_declared_bytes_per_second",
    "sigma_output_update_period_seconds")
# The two whose values change while a playlist does not, made each round.
_AGE, _STALE = 0, 2


def _fixed_values(state: RenditionState, v: Verdict) -> tuple[float | None, ...]:
    """Each family's value but the age's and the stale flag's (None: no sample)."""
    return (None, v.target_duration, None, float(v.ended), v.media_sequence,
            state.segments_total, state.media_seconds_total, state.discontinuities_total,
            v.overlong, v.missing, v.window_seconds, v.segment_bytes_per_second,
            v.declared_bytes_per_second, v.update_period)


Sample = tuple[tuple[str, ...], float]


@dataclass(slots=True)
class _Judged:
    """A rendition as judged when its playlist was last read, and its samples that do
    not change until it is read again (all but its age)."""

    seen: Seen | None  # the parse judged: the same object while the file is unchanged
    state: RenditionState
    verdict: Verdict
    labels: tuple[str, ...]  # kept from one judgement to the next
    # Per family (_RENDITION_FAMILIES), its sample; None for the age, the stale flag
    # and a value not known. Flat tuples of the same labels: the garbage collector
    # soon leaves them alone.
    fixed: tuple[Sample | None, ...]
    stale_samples: tuple[Sample, Sample]  # the stale flag's, at 0 and at 1
    troubled: bool  # a problem besides staleness (ended, missing, ...): put in words


def _judged(seen: Seen | None, state: RenditionState, verdict: Verdict,
            last: _Judged | None, labels: tuple[str, ...]) -> _Judged:
    """A new judgement's kept form. A sample whose value did not change since `last` is
    `last`'s own tuple: a live playlist's new version moves 4 of its 12 values, and
    every tuple made is one more for the garbage collector to look at."""
    values = _fixed_values(state, verdict)
    if last is None:
        fixed = tuple([None if value is None else (labels, float(value))
                       for value in values])
        stale_samples = ((labels, 0.0), (labels, 1.0))
    else:
        fixed = tuple([None if value is None
                       else kept if kept is not None and kept[1] == value
                       else (labels, float(value))
                       for value, kept in zip(values, last.fixed, strict=True)])
        stale_samples = last.stale_samples
    troubled = bool(verdict.ended or verdict.missing or verdict.overlong
                    or verdict.window_short or verdict.above_declared)
    return _Judged(seen, state, verdict, labels, fixed, stale_samples, troubled)


@dataclass(slots=True)
class _OutputKept:
    """An output's labels, error counts and the samples made of them, kept from round to
    round: made again only when what they show changes."""

    labels: tuple[str, str, str]
    error_labels: tuple[tuple[str, ...], ...]  # per REASONS
    counts: dict[str, int]  # per reason (REASONS in order, then any other)
    up: tuple[Sample, Sample]  # sigma_output_up's, at 0 and at 1
    error_samples: list[Sample] | None = None  # None: to be made from `counts`
    info: tuple[str, str, Sample] | None = None  # (format, folder, its sample)
    renditions: Sample | None = None

    @classmethod
    def new(cls, target: str, job: str, output: str) -> _OutputKept:
        labels = (target, job, output)
        return cls(labels, tuple((*labels, reason) for reason in REASONS),
                   dict.fromkeys(REASONS, 0), ((labels, 0.0), (labels, 1.0)))

    def errors(self) -> list[Sample]:
        if self.error_samples is None:
            counts = self.counts
            if len(counts) == len(self.error_labels):  # REASONS, in order
                self.error_samples = [(labels, float(count)) for labels, count
                                      in zip(self.error_labels, counts.values(), strict=True)]
            else:  # a reason beyond REASONS: exported all the same
                self.error_samples = [((*self.labels, reason), float(count))
                                      for reason, count in counts.items()]
        return self.error_samples


class OutputsSource(Source):
    """The outputs of one target's jobs (see the module docstring)."""

    name = "outputs"
    reasons = SOURCE_REASONS
    up_metric = "sigma_outputs_up"

    def __init__(self, config: TargetConfig, roots: Sequence[OutputRoot],
                 settings: OutputsConfig, contexts: SSLContexts | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock  # wall time the ages are measured at (tests pin it)
        self.target = config.name
        # Longest first: a folder belongs to the deepest root that holds it.
        self.roots = tuple(sorted(roots, key=lambda r: len(r.path), reverse=True))
        self.settings = settings
        self._contexts = contexts or SSLContexts()
        self._origins: dict[str, Origin] = {}
        # Each rendition as last judged: an unchanged playlist (the same parse, not read
        # again) is only judged again by its age.
        self._judged: dict[tuple[str, str, str], _Judged] = {}
        # Per output, its labels, error counts and samples (_OutputKept).
        self._outputs: dict[OutputKey, _OutputKept] = {}
        self._caches: dict[OutputKey, tuple[str, Mapping[str, Seen]]] = {}
        # Per job, its sigma_output_renditions_dropped sample.
        self._dropped: dict[str, Sample] = {}
        self._workers: dict[str, _Worker] = {}

    # --- the plan: which folders, under which root -------------------------------------

    def _root_of(self, folder: str) -> tuple[OutputRoot, str] | None:
        normal = posixpath.normpath(folder)
        for root in self.roots:
            if inside(normal, root.path):
                return root, normal[len(root.path):].strip("/")
        return None

    def _plan(self, progress: Progress) -> list[_Planned]:
        plan: list[_Planned] = []
        for job in progress.jobs:
            if job.state not in UP_STATES_JOB:
                continue  # a stopped channel's playlists are not viewers' business
            for out in job.outputs:
                if out.format not in FOLDER_FORMATS or out.folder is None:
                    continue
                found = self._root_of(out.folder)
                root, relative = found if found is not None else (None, "")
                plan.append(_Planned(job.name, job.state, out.index, out.format, root,
                                     relative))
        return plan

    # --- reading ----------------------------------------------------------------

    def _cache(self, item: _Planned) -> Mapping[str, Seen]:
        kept = self._caches.get((item.job, item.output))
        return kept[1] if kept is not None and kept[0] == item.relative else {}

    async def _read_local(self, root: OutputRoot, items: list[_Planned]
                          ) -> tuple[dict[OutputKey, OutputRead], bool]:
        """Read the outputs under a root on disk, in a thread, within the target's timeout.
        The results, and whether the read finished (or was already stuck)."""
        busy = self._workers.get(root.path)
        if busy is not None and not busy.future.done():
            error = FolderError("timeout", f"the read of this root started "
                                f"{time.monotonic() - busy.since:.0f}s ago has not returned")
            return {(i.job, i.output): OutputRead(error=error) for i in items}, False
        jobs = [LocalOutput((i.job, i.output), i.relative, i.format, self._cache(i))
                for i in items]
        worker = _Worker(concurrent.futures.Future(), time.monotonic())
        max_renditions, max_bytes = self.settings.max_renditions, self.settings.max_playlist_bytes

        def work() -> None:
            try:
                read_root(root.path, jobs, max_renditions=max_renditions, max_bytes=max_bytes,
                          done=lambda key, read: worker.results.append((key, read)))
                worker.future.set_result(None)
            except BaseException as exc:  # handed to the waiting round, whatever it is
                worker.future.set_exception(exc)

        self._workers[root.path] = worker
        # A daemon thread, not the loop's executor: a read stuck in a dead mount
        # must never hold up the exporter's exit.
        threading.Thread(target=work, name="sigma-outputs-read", daemon=True).start()
        waiter = asyncio.wrap_future(worker.future)
        waiter.add_done_callback(lambda done: done.cancelled() or done.exception())
        finished = True
        try:
            await asyncio.wait_for(asyncio.shield(waiter), self.config.timeout)
        except TimeoutError:
            finished = False
        results: dict[OutputKey, OutputRead] = {}
        for key, read in list(worker.results):
            results[key] = read  # type: ignore[index]
        if finished:
            worker.results.clear()  # taken: not kept alive until the next round
        late = FolderError("timeout", f"not read within {self.config.timeout:g}s (the "
                           "target's timeout): a hung or very slow mount")
        for item in items:
            results.setdefault((item.job, item.output), OutputRead(error=late))
        return results, finished

    async def _read_central(self, root: OutputRoot, items: list[_Planned]
                            ) -> tuple[dict[OutputKey, OutputRead], bool]:
        origin = self._origins.get(root.path)
        if origin is None:
            origin = self._origins[root.path] = Origin(
                self.config, self._contexts, self.settings.max_playlist_bytes)
        url = root.url or ""

        async def one(item: _Planned) -> OutputRead:
            folder = OriginFolder(origin, url + quote(item.relative, safe="/"))
            return await read_output(
                folder, item.format, self._cache(item),
                max_renditions=self.settings.max_renditions,
                max_bytes=self.settings.max_playlist_bytes,
                playlist_names=self.settings.playlist_names)

        tasks = {(i.job, i.output): asyncio.ensure_future(one(i)) for i in items}
        # The whole pass within the interval: the next round must find it done.
        await asyncio.wait(tasks.values(), timeout=self.config.interval)
        results: dict[OutputKey, OutputRead] = {}
        late = FolderError("timeout", f"not read within {self.config.interval:g}s "
                           "(the target's interval)")
        for key, task in tasks.items():
            if task.done():
                results[key] = task.result()
            else:
                task.cancel()
                results[key] = OutputRead(error=late)
        return results, True

    async def read(self, round: Round) -> Reading:
        progress = await round.value("progress")
        if not isinstance(progress, Progress):
            raise SourceError("progress_down", "no progress answer this round: the jobs "
                              "and their outputs are unknown")
        plan = self._plan(progress)
        by_root: dict[str, list[_Planned]] = {}
        for item in plan:
            if item.root is not None:
                by_root.setdefault(item.root.path, []).append(item)
        roots = {r.path: r for r in self.roots}
        reads: dict[OutputKey, OutputRead] = {}
        local = [r for r in by_root if roots[r].url is None]
        central = [r for r in by_root if roots[r].url is not None]
        done = await asyncio.gather(
            *(self._read_local(roots[r], by_root[r]) for r in local),
            *(self._read_central(roots[r], by_root[r]) for r in central))
        finished = 0
        for results, in_time in done:
            finished += in_time
            reads.update(results)
        if by_root and not finished:
            raise SourceError("timeout", f"no root's read finished within "
                              f"{self.config.timeout:g}s: a hung or very slow mount")
        return self._publish(plan, reads, self.clock())

    # --- judging and publishing ----------------------------------------------------

    def _publish(self, plan: list[_Planned], reads: Mapping[OutputKey, OutputRead],
                 now: float) -> Reading:
        t = self.target
        samples = new_samples()
        # The per-rendition families' lists, in _RENDITION_FAMILIES' order.
        families = [samples[name] for name in _RENDITION_FAMILIES]
        ages, stales = families[_AGE], families[_STALE]
        errors_total = samples["sigma_output_errors_total"]
        infos, ups = samples["sigma_output_info"], samples["sigma_output_up"]
        rendition_counts = samples["sigma_output_renditions"]
        statuses: list[tuple[str, str, str, str, float, float | None, bool, bool]] = []
        unreadable: list[tuple[str, str, str]] = []
        problems: list[tuple[int, str]] = []  # (rank, sentence): stale first
        fixed_rows: list[tuple[Sample | None, ...]] = []  # per rendition, _Judged.fixed
        judged: dict[tuple[str, str, str], _Judged] = {}
        caches: dict[OutputKey, tuple[str, Mapping[str, Seen]]] = {}
        outputs: dict[OutputKey, _OutputKept] = {}
        left: dict[str, int] = {}  # renditions each job may still export
        dropped: dict[str, int] = {}
        # What was kept from the last round is let go as this round's replaces it, not
        # all at the end: a round then never holds two rounds' objects at once, and
        # stays under the garbage collector's threshold (docs/performance.md).
        last_judged, last_caches = self._judged, self._caches
        for item in plan:
            key = (item.job, item.output)
            kept_output = outputs[key] = self._outputs.get(key) \
                or _OutputKept.new(t, item.job, item.output)
            o = kept_output.labels
            read = reads.get(key)
            if item.root is None:
                read = OutputRead(error=FolderError(
                    "outside_root", "its folder is under no configured root (outputs.roots)"))
            elif read is None:
                read = OutputRead(error=FolderError("timeout", "not read"))
            else:
                info = kept_output.info
                if info is None or info[0] != item.format or info[1] != item.relative:
                    info = kept_output.info = (item.format, item.relative, (
                        (*o, item.format, _label(item.relative or ".")), 1.0))
                infos.append(info[2])
                caches[key] = (item.relative, read.cache)
                last_caches.pop(key, None)
            if read.error is not None or read.uri_errors \
                    or any(r.error is not None for r in read.renditions):
                failed = {read.error.reason} if read.error is not None else set()
                failed |= {r.error.reason for r in read.renditions if r.error is not None}
                if read.uri_errors:
                    failed.add("unsafe_uri")
                counts = kept_output.counts
                for reason in failed:
                    counts[reason] = counts.get(reason, 0) + 1
                kept_output.error_samples = None
            errors_total.extend(kept_output.errors())
            ups.append(kept_output.up[1 if read.error is None else 0])
            if read.error is not None:
                unreadable.append((item.job, item.output, f"{read.error.reason}: "
                                   f"{read.error.message}"))
                problems.append((3, f"{_where(item)}: cannot be read: {read.error.reason}: "
                                    f"{read.error.message}"))
                continue
            room = left.setdefault(item.job, self.settings.max_renditions)
            kept = read.renditions[:room]
            left[item.job] = room - len(kept)
            skipped = len(read.renditions) - len(kept) + read.dropped
            if skipped:
                dropped[item.job] = dropped.get(item.job, 0) + skipped
            count = kept_output.renditions
            if count is None or count[1] != len(kept):
                count = kept_output.renditions = (o, float(len(kept)))
            rendition_counts.append(count)
            for rendition in kept:
                name = _label(rendition.name)
                if rendition.error is not None:
                    problems.append((3, f"{_where(item)} {name}: cannot be read: "
                                        f"{rendition.error.reason}: {rendition.error.message}"))
                    continue
                rkey = (item.job, item.output, name)
                last = last_judged.pop(rkey, None)
                if last is not None and last.seen is rendition.seen:
                    # Not read again: the same content, judged again only by its age.
                    now_judged = last
                    verdict = last.verdict
                    age = max(0.0, now - last.state.changed_at)
                    stale = not verdict.ended and verdict.limit is not None \
                        and age > verdict.limit
                else:
                    judgement = judge(last.state if last is not None else None, rendition, now)
                    if judgement is None:
                        continue
                    state, verdict = judgement
                    now_judged = _judged(rendition.seen, state, verdict, last,
                                         last.labels if last is not None else (*o, name))
                    age, stale = verdict.age, verdict.stale
                judged[rkey] = now_judged
                ages.append((now_judged.labels, age))
                if verdict.limit is not None:
                    stales.append(now_judged.stale_samples[1 if stale else 0])
                fixed_rows.append(now_judged.fixed)
                statuses.append((item.job, item.output, item.format, name, age,
                                 verdict.limit, stale, verdict.ended))
                if stale or now_judged.troubled:
                    problems.extend(_problems(f"{_where(item)} {name}", verdict.at(age),
                                              item.state))
        # Each family's kept samples, every rendition's in order: one pass in C a family
        # (filter drops the None of a value not known), not a loop over 14 a rendition.
        for index, family in enumerate(families):
            if index not in (_AGE, _STALE):
                family.extend(filter(None, map(itemgetter(index), fixed_rows)))
        dropped_samples = samples["sigma_output_renditions_dropped"]
        last_dropped, kept_dropped = self._dropped, {}
        for job in left:
            sample = last_dropped.get(job)
            value = dropped.get(job, 0)
            if sample is None or sample[1] != value:
                sample = ((t, job), float(value))
            kept_dropped[job] = sample
            dropped_samples.append(sample)
        # Outputs and renditions gone from the answer take their memory with them.
        self._judged, self._caches, self._outputs = judged, caches, outputs
        self._dropped = kept_dropped
        problems.sort(key=lambda p: p[0])
        findings = [p[1] for p in problems[:MAX_FINDINGS]]
        if len(problems) > MAX_FINDINGS:
            findings.append(f"and {len(problems) - MAX_FINDINGS} more output problems")
        report = OutputsReport(tuple(statuses), tuple(unreadable))
        return Reading(samples, report, now, findings=tuple(findings))

    async def aclose(self) -> None:
        for origin in self._origins.values():
            await origin.aclose()
        self._origins.clear()


def _where(item: _Planned) -> str:
    return f"{item.job} output {item.output} ({item.format})"


def _problems(where: str, v: Verdict, state: str | None) -> list[tuple[int, str]]:
    """The sentences of one rendition's problems, ranked: stale 0, ended 1, others 2."""
    out: list[tuple[int, str]] = []
    if v.stale and v.limit is not None:
        out.append((0, f"{where}: stale, unchanged for {v.age:.0f} s (limit {v.limit:g} s: "
                       f"1.5 x {v.limit / 1.5:g} s, RFC 8216 6.2.1)"))
    if v.ended:
        out.append((1, f"{where}: ended (EXT-X-ENDLIST or a static MPD) while Sigma says "
                       f"{state}"))
    if v.missing:
        out.append((2, f"{where}: {v.missing} listed segment(s) missing"))
    if v.overlong and v.target_duration is not None:
        out.append((2, f"{where}: {v.overlong} segment(s) longer than the target duration "
                       f"{v.target_duration:g} s"))
    if v.window_short and v.window_seconds is not None and v.target_duration is not None:
        out.append((2, f"{where}: window {v.window_seconds:.0f} s, under 3 target durations "
                       f"({3 * v.target_duration:g} s)"))
    if v.above_declared and v.segment_bytes_per_second and v.declared_bytes_per_second:
        out.append((2, f"{where}: newest segment at {v.segment_bytes_per_second * 8 / 1000:.0f} "
                       f"kbit/s, above its declared {v.declared_bytes_per_second * 8 / 1000:.0f}"
                       " kbit/s"))
    return out


class OutputsFactory:
    """The outputs source of each target that has roots (`outputs.roots`): the
    `SourceFactory` handed to the Poller. `update` takes a reloaded config."""

    def __init__(self, config: Config, contexts: SSLContexts | None = None) -> None:
        self.contexts = contexts or SSLContexts()
        self.settings = config.outputs
        self.only_target: str | None = None
        self.update(config)

    def update(self, config: Config) -> bool:
        """Take a new config's outputs section; whether it changed what the sources do."""
        only = config.targets[0].name if len(config.targets) == 1 else None
        changed = (config.outputs, only) != (self.settings, self.only_target)
        self.settings, self.only_target = config.outputs, only
        return changed

    def __call__(self, config: TargetConfig) -> list[Source]:
        if not config.jobs.enabled:
            return []  # no progress: no jobs, no outputs
        roots = self.settings.roots_of(config.name, config.name == self.only_target)
        return [OutputsSource(config, roots, self.settings, self.contexts)] if roots else []
