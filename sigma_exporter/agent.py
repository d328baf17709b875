"""Agent mode: NVML readings and the cross-check, hooked in after each dump.

(Filled in by the agent-mode work; without NVML nothing is added.)
"""

from __future__ import annotations

from .config import Config
from .poller import AfterDump


def after_dump_hook(config: Config) -> AfterDump | None:
    return None
