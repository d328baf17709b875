"""The one-shot commands' work: `once` polls a target once; `check-config` checks
what start-up would check on this host (agent mode's NVML).

Apart from `app.py` on purpose: neither loads the HTTP server, the web config
watcher or the scheduler, so `once` and `check-config` start in a fraction of
the exporter's time and memory.
"""

from __future__ import annotations

import asyncio
import logging

from sigma_exporter.collect import exposition
from sigma_exporter.config import Config
from sigma_exporter.logsetup import plain
from sigma_exporter.outputs.source import OutputsFactory
from sigma_exporter.poll.scheduler import Poller
from sigma_exporter.poll.target import TargetState


def check_nvml(config: Config) -> str:
    """What agent mode would do on this host, as start-up decides it.

    `nvml.enabled: true` that cannot be honoured raises ConfigError (start-up
    refuses it too); otherwise a sentence saying what was found.
    """
    if config.nvml.enabled == "false":
        return "agent mode off (nvml.enabled: false)"
    from sigma_exporter.agent.source import nvml_source  # late: NVML bindings only when asked

    reasons: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            reasons.append(plain(record))

    agent_log = logging.getLogger("sigma_exporter.agent.source")
    handler, level = Collect(logging.INFO), agent_log.level
    agent_log.addHandler(handler)
    agent_log.setLevel(logging.INFO)
    try:
        nvml = nvml_source(config)
    finally:
        agent_log.removeHandler(handler)
        agent_log.setLevel(level)
    if nvml is not None:
        nvml.close()
    # The source's own lines start "agent mode off: ..." already: say it once.
    said = "; ".join(r.removeprefix("agent mode off: ") for r in reasons) or "no reason given"
    return f"{'checked' if nvml is not None else 'agent mode off on this host'}: {said}"


def poll_once(config: Config, outputs: list[str] | None = None) -> tuple[bytes, bool, str]:
    """Poll the config's first target once: its exposition, whether every source
    answered, and a one-line verdict naming every source's outcome (a dead server
    fails dump and progress alike).

    `outputs`, when given, receives the outputs source's findings (stale
    playlists first), one sentence each.
    """
    async def poll() -> tuple[bytes, bool, str]:
        poller = Poller(config, [OutputsFactory(config)])
        try:
            await poller.poll_all_once()
            state = next(iter(poller.targets.values()))
            body = exposition.merge([state.published.rendered], openmetrics=False)
            status = state.published.status
            found = status.source("outputs") if status is not None else None
            if outputs is not None and found is not None:
                outputs.extend(found.findings)
            every_source_up = all(s.up for s in state.health.sources.values())
            return body, every_source_up, once_verdict(state)
        finally:
            await poller.stop()

    return asyncio.run(poll())


def once_verdict(state: TargetState) -> str:
    """`sigma-01 UP: dump ok in 12 ms; progress ok: 4 channels, 4 up; 2 GPUs`: every
    source's outcome, with its error when it failed. DOWN when the dump failed,
    DEGRADED when another source did."""
    status = state.published.status
    parts = []
    for name, source in state.health.sources.items():
        if source.error is not None:
            parts.append(f"{name} FAILED: {source.error}")
        elif name == "progress" and status is not None:
            parts.append(f"progress ok: {status.channels} channels, {status.channels_up} up")
        else:
            took = "" if source.duration is None else f" in {source.duration * 1000:.0f} ms"
            parts.append(f"{name} ok{took}")
    if state.health.up and status is not None:
        parts.append(f"{len(status.gpus)} GPU{'' if len(status.gpus) == 1 else 's'}")
    failed = any(s.error is not None for s in state.health.sources.values())
    verdict = "DOWN" if not state.health.up else "DEGRADED" if failed else "UP"
    return f"{state.name} {verdict}: {'; '.join(parts)}"
