"""Agent mode: NVML readings and the cross-check, as one more source of the host's target.

When the exporter runs on the Sigma host itself it can also ask the NVIDIA
driver (NVML) about the GPUs and check Sigma's own GPU figures against it.
`nvml_source(config)` decides once, at start, whether that is on:

* `nvml.enabled: false`: off, silently.
* `auto` (default): on when NVML loads and a target is on this host; one
  info line says which, and why when off. A laptop or CI job gets no NVML
  series and no error.
* `true`: on, or refuse to start (ConfigError) naming the key and the fix.

Only the chosen target has the `nvml` source (`NvmlSource.factory`); its
`execute()` records the outcome like any source's. The driver is read once
per poll of that target, at the same time as its dump, in a daemon thread of
its own (NVML calls block, and a wedged driver can block one for ever): the
round waits at most `nvml.timeout` for it. The cross-check then compares the
readings with that round's dump. A read that misses that deadline is left to
finish on its own; until it does no other read starts, and every round
counts `nvml_error` with sigma_nvml_up 0. Being a daemon thread, it never
holds up the exporter's exit.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ipaddress
import logging
import socket
import threading
import time
from collections.abc import Iterable
from urllib.parse import urlsplit

from sigma_exporter.agent.crosscheck import CrossCheck, Tolerances, crosscheck_samples
from sigma_exporter.agent.crosscheck import Result as CrossCheckResult
from sigma_exporter.agent.nvml import (
    NvmlBackend,
    NvmlFailure,
    PynvmlBackend,
    Readings,
    nvml_samples,
)
from sigma_exporter.collect.samples import merge
from sigma_exporter.collect.source import Reading, Round, Source, SourceError
from sigma_exporter.config import DEFAULT_NVML_TIMEOUT, Config, ConfigError, TargetConfig
from sigma_exporter.logsetup import fields
from sigma_exporter.source.snapshot import Dump

log = logging.getLogger("sigma_exporter.agent.source")

_FIX_ENABLED = ("install the NVIDIA driver on this host (NVML is libnvidia-ml.so.1), "
                "or set `nvml.enabled: auto` (on only where a GPU is) or `nvml.enabled: false`")
_FIX_TARGET = "set `nvml.target:` to the name of the target that runs on this host"
# How an NVML read can fail, besides a bug of ours: the driver's doing, whatever
# the cause (sigma_poll_errors_total).
NVML_REASONS = ("nvml_error",)


def local_names() -> set[str]:
    """Names this host answers to (lower case), for matching target URLs."""
    names = {"localhost", "localhost.localdomain"}
    for name in (socket.gethostname(), socket.getfqdn()):
        if name:
            names.add(name.lower())
            names.add(name.lower().split(".", 1)[0])
    return names


def _is_local(url: str, names: set[str]) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    if host in names:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def select_target(config: Config, names: Iterable[str] | None = None
                  ) -> tuple[TargetConfig | None, str]:
    """The target on this host, or None and the reason (for a log line or an error)."""
    if config.nvml.target is not None:
        chosen = config.target(config.nvml.target)
        if chosen is not None:
            return chosen, "set by nvml.target"
        return None, f"nvml.target names {config.nvml.target!r}, which is not a target"
    if len(config.targets) == 1:
        return config.targets[0], "the only target"
    local = {n.lower() for n in (names if names is not None else local_names())}
    found = [t for t in config.targets if _is_local(t.url, local)]
    if len(found) == 1:
        return found[0], "its URL points at this host"
    if found:
        return None, (f"several targets point at this host "
                      f"({', '.join(t.name for t in found)})")
    return None, f"no target's URL points at this host ({', '.join(sorted(local))})"


class NvmlSource(Source):
    """The `nvml` source of the target on this host: the driver's readings and the
    cross-check of that round's dump against them."""

    name = "nvml"
    reasons = NVML_REASONS
    up_metric = "sigma_nvml_up"

    def __init__(self, target: str, backend: NvmlBackend, crosscheck: CrossCheck,
                 timeout: float = DEFAULT_NVML_TIMEOUT) -> None:
        self.target = target
        self.backend = backend
        self.crosscheck = crosscheck
        self.timeout = timeout
        self._reading: concurrent.futures.Future[Readings] | None = None  # the read in flight
        self._reading_since = 0.0

    def _start_read(self) -> concurrent.futures.Future[Readings]:
        future: concurrent.futures.Future[Readings] = concurrent.futures.Future()

        def read() -> None:
            try:
                future.set_result(self.backend.read())
            except BaseException as exc:  # handed to the waiting poll, whatever it is
                future.set_exception(exc)

        # Not the loop's executor: asyncio.run() joins that at exit, and a read
        # stuck in the driver would hold up SIGTERM for ever.
        threading.Thread(target=read, name="sigma-nvml-read", daemon=True).start()
        self._reading, self._reading_since = future, time.monotonic()
        return future

    async def _read(self) -> Readings:
        if self._reading is not None and not self._reading.done():
            raise NvmlFailure(f"the NVML read started {time.monotonic() - self._reading_since:.0f}"
                              "s ago has not returned; not starting another")
        waiter = asyncio.wrap_future(self._start_read())
        # A read that ends after its deadline fails or succeeds unheard: say so to asyncio.
        waiter.add_done_callback(lambda done: done.cancelled() or done.exception())
        try:
            # shield: the deadline abandons the wait, never the thread's future.
            return await asyncio.wait_for(asyncio.shield(waiter), self.timeout)
        except TimeoutError:
            raise NvmlFailure(f"NVML did not answer within {self.timeout:g}s") from None

    async def read(self, round: Round) -> Reading:
        """This round's NVML readings, cross-checked with the round's dump if it came."""
        try:
            readings = await self._read()
        except NvmlFailure as exc:  # the driver's doing: no traceback
            raise SourceError("nvml_error", str(exc)) from None
        samples = nvml_samples(self.target, readings)
        findings: tuple[str, ...] = ()
        dump = await round.value("dump")
        if isinstance(dump, Dump):  # no Sigma side this round: nothing to compare
            result = self.crosscheck.update(dump.gpus, readings)
            samples = merge([samples, crosscheck_samples(self.target, result)])
            findings = findings_of(result)
        return Reading(samples, readings, findings=findings)

    def factory(self, config: TargetConfig) -> list[Source]:
        """The sources this adds to a target: itself, for the target on this host."""
        return [self] if config.name == self.target else []

    def close(self) -> None:
        """Let go of NVML, at the exporter's shutdown. (Not `aclose`: a target that a
        reload replaces hands the same source to its successor.)"""
        if self._reading is not None and not self._reading.done():
            # nvmlShutdown would wait for the stuck call: let the process end instead.
            log.warning("NVML read still stuck at shutdown; not closing NVML",
                        extra=fields(target=self.target))
            return
        self.backend.close()


def findings_of(result: CrossCheckResult) -> tuple[str, ...]:
    """The cross-check's problems as the status page lists them."""
    found = [f"GPU {gpu}: {field} differs from NVML" for gpu, field, bad in result.mismatches
             if bad]
    found += [f"GPU {gpu}: missing on the {side} side" for gpu, side, gone in result.missing
              if gone]
    return tuple(found)


def nvml_source(config: Config, backend: NvmlBackend | None = None,
                names: Iterable[str] | None = None) -> NvmlSource | None:
    """The NVML source for this config, or None when agent mode is off.

    Raises ConfigError when `nvml.enabled: true` cannot be honoured.
    `backend` and `names` (this host's names) are for tests and scripts.
    """
    mode = config.nvml.enabled
    if mode == "false":
        return None
    required = mode == "true"
    target, why = select_target(config, names)
    if target is None and required:
        raise ConfigError(config.source, "nvml.target",
                          f"nvml.enabled is true but {why}", _FIX_TARGET)
    nvml = backend if backend is not None else PynvmlBackend()
    try:
        info = nvml.init()
    except NvmlFailure as exc:
        if required:
            raise ConfigError(config.source, "nvml.enabled",
                              f"true, but NVML cannot be used: {exc}", _FIX_ENABLED) from None
        log.info("agent mode off: NVML not available; exporting Sigma's own GPU figures only",
                 extra=fields(error=str(exc)))
        return None
    if target is None:
        nvml.close()
        log.info("agent mode off: NVML works but no target is this host", extra=fields(
            driver=info.driver_version, gpus=info.gpu_count, reason=why, fix=_FIX_TARGET))
        return None
    log.info("agent mode on", extra=fields(
        target=target.name, reason=why, driver=info.driver_version, gpus=info.gpu_count,
        window=config.nvml.window))
    check = CrossCheck(Tolerances.from_config(config.nvml), config.nvml.window, target.name)
    return NvmlSource(target.name, nvml, check, config.nvml.timeout)
