"""What the poll side hands the web side: one immutable View per generation.

The poller builds a new View whenever published data changed and swaps it in
with one attribute assignment (`Poller.view = View(...)`). The web thread
reads that attribute once per request and builds everything it serves from
the object it got: nothing in a View changes after it is built, so the two
threads never share a mutable object.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from sigma_exporter.collect import exposition
from sigma_exporter.poll.summary import TargetStatus


@dataclass(frozen=True, slots=True)
class TargetView:
    """One target as of its last poll: what /metrics, /probe and the page show of it."""

    name: str
    url: str  # redacted: the page shows it
    interval: float
    rendered: exposition.Rendered  # its exposition blocks; never changed once built
    status: TargetStatus | None = None  # the status page's summary; None before a poll


@dataclass(frozen=True, slots=True)
class ConfigReload:
    """The outcome of the last config reload (sigma_config_last_reload_*)."""

    successful: bool = True
    last_success: float = field(default_factory=time.time)  # Unix time


@dataclass(frozen=True, slots=True)
class View:
    """Everything the web side serves, as of one generation of published data."""

    generation: int  # bumped per View; the web side's body cache keys on it
    targets: Mapping[str, TargetView]  # in config order; read-only
    ready: bool  # every target polled once: /-/ready answers 200
    reload: ConfigReload

    @staticmethod
    def of(generation: int, targets: list[TargetView], ready: bool,
           reload: ConfigReload) -> View:
        # A read-only proxy over a dict nobody else holds: immutable in practice.
        return View(generation, MappingProxyType({t.name: t for t in targets}), ready, reload)
