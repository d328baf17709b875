"""What /metrics, /probe and the status page serve, built from the poll side's View.

The exporter lives on the web thread. It reads the poll side's current View
(one attribute, swapped whole by the poller) and builds everything it serves
from that immutable object. Its caches (`_bodies`, `_asked`, `_building`,
`_next`) are read and changed on the web thread only.

The merged, gzip-1 body of the targets is built once per View, ahead of the
scrape, for the variants Prometheus asks for (`prebuild`, scheduled on the
web thread when a new View is announced), so a scrape only appends the
process metrics. The build (a merge of the whole fleet and its compression,
tens of milliseconds at 1,000 targets, more while a poll round holds the
GIL) runs on the exporter's own build thread, one build per variant at a
time. A View announced while a build runs is remembered (the newest one
only) and built as soon as that build ends. So a scrape gets the newest
complete body: while a build runs, the body before it; the bound on how
stale that is is one build (the one running) plus the next, never a
dropped View. A scrape builds on the web loop itself only when its variant
has no body yet, or one nobody kept current (not scraped within
PREBUILD_WINDOW). A build reads only the immutable View and returns an
immutable body; the web thread collects it from its Future.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import platform
import time
import zlib
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector
from prometheus_client import generate_latest as text_generate
from prometheus_client.openmetrics.exposition import generate_latest as om_generate
from prometheus_client.process_collector import ProcessCollector

from sigma_exporter import __version__, buildinfo
from sigma_exporter.collect import exposition
from sigma_exporter.collect.samples import Samples, new_samples
from sigma_exporter.poll.view import View
from sigma_exporter.web import status


class ViewSource(Protocol):
    """Where the current View is read from (the poller's `view` attribute)."""

    @property
    def view(self) -> View: ...


class GzipPrefix:
    """A gzip stream of a cached body that can be finished with a fresh tail.

    The families' body changes once per poll; the exporter's own process
    metrics change every scrape. Compressing the body once, sync-flushing,
    and finishing a copy of the compressor per scrape yields one valid gzip
    member without recompressing megabytes. Level 1: ~10x cheaper than 9.
    """

    __slots__ = ("_compressor", "head")

    def __init__(self, body: bytes) -> None:
        compressor = zlib.compressobj(1, zlib.DEFLATED, 31)
        self.head = compressor.compress(body) + compressor.flush(zlib.Z_SYNC_FLUSH)
        self._compressor = compressor

    def finish(self, tail: bytes) -> bytes:
        compressor = self._compressor.copy()
        return self.head + compressor.compress(tail) + compressor.flush()


# Bodies are prebuilt for a new View for variants scraped within this many seconds.
PREBUILD_WINDOW = 300.0

log = logging.getLogger(__name__)

Variant = tuple[bool, bool]  # (openmetrics, gzip)


@dataclass(frozen=True, slots=True)
class _Body:
    """One variant's merged targets: plain, or compressed (never both: at 1,000
    targets the plain body is about 15 MB, and a gzip variant never serves it)."""

    generation: int
    plain: bytes | None
    gzip: GzipPrefix | None


class Exporter:
    """What the HTTP side serves, built from the poll side's current View."""

    def __init__(self, source: ViewSource, telemetry_path: str = "/metrics",
                 builder: Executor | None = None) -> None:
        self.source = source
        self.telemetry_path = telemetry_path
        # Set by the application before the web thread starts: re-read the
        # config file on the poll loop; resolves to None when the new file is
        # in use, else why it was refused.
        self.request_reload: Callable[[], Awaitable[str | None]] | None = None
        # The exporter's own process, as every prometheus_client program has it:
        # process_*, python_gc_* and python_info (served after the targets).
        self._process_registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self._process_registry)
        GCCollector(registry=self._process_registry)
        PlatformCollector(registry=self._process_registry)
        self._build_info = buildinfo.current()
        # Last built body per (openmetrics, gzip), tagged with the generation
        # of the View it was built from.
        self._bodies: dict[Variant, _Body] = {}
        self._asked: dict[Variant, float] = {}  # variant -> last scrape (monotonic)
        # Builds for a new View, off the web loop; one at a time per variant,
        # and the newest View announced meanwhile, built when that one ends.
        self._builder = builder or ThreadPoolExecutor(1, thread_name_prefix="sigma-build")
        self._building: dict[Variant, Future[_Body]] = {}
        self._next: dict[Variant, View] = {}

    @property
    def view(self) -> View:
        return self.source.view

    def _self_samples(self, view: View) -> Samples:
        out = new_samples()
        out["sigma_exporter_build_info"].append(
            ((self._build_info.version, self._build_info.revision, platform.python_version()),
             1.0))
        out["sigma_targets"].append(((), float(len(view.targets))))
        out["sigma_config_last_reload_successful"].append(
            ((), 1.0 if view.reload.successful else 0.0))
        out["sigma_config_last_reload_success_timestamp_seconds"].append(
            ((), view.reload.last_success))
        return out

    def _process_metrics(self, openmetrics: bool) -> bytes:
        if openmetrics:
            body: bytes = om_generate(self._process_registry)  # type: ignore[no-untyped-call]
            return body.removesuffix(b"# EOF\n")
        return text_generate(self._process_registry)

    def _build(self, openmetrics: bool, gzip: bool, view: View) -> _Body:
        blocks = [exposition.render(self._self_samples(view))]
        blocks.extend(target.rendered for target in view.targets.values())
        plain = exposition.merge(blocks, openmetrics, end=False)
        if gzip:
            return _Body(view.generation, None, GzipPrefix(plain))
        return _Body(view.generation, plain, None)

    def prebuild(self, view: View) -> None:
        """Build, from a new `view`, the bodies scrapers asked for lately.

        Scheduled on the web thread when the poller announces the View; the
        build itself runs on the build thread (see the module docstring).
        """
        now = time.monotonic()
        for variant, asked in list(self._asked.items()):
            if now - asked < PREBUILD_WINDOW:
                self._want(variant, view)

    def _want(self, variant: Variant, view: View) -> None:
        """Build `view`'s body for `variant`: now, or right after the build running."""
        self._collect(variant)
        body = self._bodies.get(variant)
        if body is not None and body.generation >= view.generation:
            return
        if variant in self._building:  # remember the newest View; built when this ends
            waiting = self._next.get(variant)
            if waiting is None or view.generation > waiting.generation:
                self._next[variant] = view
            return
        self._start(variant, view)

    def _start(self, variant: Variant, view: View) -> None:
        future = self._builder.submit(self._build, *variant, view)
        self._building[variant] = future
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a direct call): collected by the next scrape
            return

        def built(_: Future[_Body]) -> None:  # on the build thread: hop to the web loop
            with contextlib.suppress(RuntimeError):  # the loop closed: shutting down
                loop.call_soon_threadsafe(self._collect, variant)

        future.add_done_callback(built)

    def _collect(self, variant: Variant) -> None:
        """Keep a finished build's body (if newer), then start the View that waited."""
        pending = self._building.get(variant)
        if pending is None or not pending.done():
            return
        del self._building[variant]
        try:
            built = pending.result()
        except Exception:  # never stop serving: the next View or scrape builds again
            log.exception("building the scrape body failed")
        else:
            current = self._bodies.get(variant)
            if current is None or built.generation > current.generation:
                self._bodies[variant] = built
        waiting = self._next.pop(variant, None)
        if waiting is not None:
            self._want(variant, waiting)

    def _refresh(self, variant: Variant, view: View) -> _Body:
        """For a scrape: the variant's newest complete body.

        Built here and now when there is none, or when the variant was not
        scraped within PREBUILD_WINDOW (no prebuild kept it current, so the
        last body may be old). Otherwise the last complete body is served
        while a newer one builds.
        """
        self._collect(variant)
        body = self._bodies.get(variant)
        if body is not None and body.generation >= view.generation:
            return body
        unattended = time.monotonic() - self._asked.get(variant, -PREBUILD_WINDOW) \
            >= PREBUILD_WINDOW
        if body is None or unattended:
            body = self._bodies[variant] = self._build(*variant, view)
            return body
        self._want(variant, view)
        return body

    def metrics_body(self, openmetrics: bool, gzip: bool) -> bytes:
        """The full /metrics body; the targets' part is built once per View."""
        variant = (openmetrics, gzip)
        body = self._refresh(variant, self.view)
        self._asked[variant] = time.monotonic()
        tail = self._process_metrics(openmetrics) + (b"# EOF\n" if openmetrics else b"")
        if body.gzip is not None:
            return body.gzip.finish(tail)
        return (body.plain or b"") + tail

    def close(self) -> None:
        """Let go of the build thread (the web thread stops)."""
        self._builder.shutdown(wait=False, cancel_futures=True)

    def probe_body(self, name: str, openmetrics: bool) -> bytes | None:
        target = self.view.targets.get(name)
        if target is None:
            return None
        return exposition.merge([target.rendered], openmetrics)

    def ready(self) -> bool:
        return self.view.ready

    def landing_page(self) -> str:
        """The status page, from the current View (no I/O, no waiting)."""
        rows = [status.Row(t.name, t.url, t.interval, t.status)
                for t in self.view.targets.values()]
        return status.render_page(rows, version=__version__,
                                  telemetry_path=self.telemetry_path, now=time.time())
