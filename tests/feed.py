"""A target fed with literal Sigma answers, one round per call, in-process.

The real `DumpSource` and `ProgressSource` run inside the real
`TargetState` and `execute()`; only the HTTP client is a stand-in that
answers with the given bodies (or raises the given `PollError`). Durations
come from a clock the stand-in advances by each answer's `duration`, so
expositions are byte-for-byte reproducible (the goldens).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from sigma_exporter.collect import exposition
from sigma_exporter.collect.samples import Samples
from sigma_exporter.collect.sigma import DumpSource, ProgressSource
from sigma_exporter.collect.source import Source
from sigma_exporter.config import TargetConfig
from sigma_exporter.poll.target import TargetState
from sigma_exporter.source.client import Answer, PollError

Given = Answer | PollError | dict[str, Any]


class Clock:
    """A clock per task that moves only when told: each source's duration is
    exactly its answer's, whatever the other sources of the round do."""

    def __init__(self) -> None:
        self._now: dict[object, float] = {}

    def __call__(self) -> float:
        return self._now.get(asyncio.current_task(), 0.0)

    def advance(self, seconds: float) -> None:
        task = asyncio.current_task()
        self._now[task] = self._now.get(task, 0.0) + seconds


class ScriptedClient:
    """Answers each request type with what the test set; a missing one is a refusal."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.answers: dict[str, Answer | PollError] = {}
        self.asked: list[str] = []

    async def fetch(self, payload: dict[str, str], method: str = "POST") -> Answer:
        kind = payload["type"]
        self.asked.append(kind)
        answer = self.answers.get(kind, PollError("connect", "connection refused"))
        if isinstance(answer, PollError):
            raise answer
        self.clock.advance(answer.duration)
        return answer

    async def aclose(self) -> None:
        return None


def answer(given: Given, received_at: float, duration: float) -> Answer | PollError:
    if isinstance(given, Answer | PollError):
        return given
    return Answer(given, received_at, duration)


class Fed:
    """A TargetState whose Sigma sources answer with literal bodies."""

    def __init__(self, config: TargetConfig | None = None, extra: Sequence[Source] = (),
                 **overrides: Any) -> None:
        config = config or TargetConfig(name="sigma-01", url="http://127.0.0.1:9999")
        self.config = replace(config, **overrides)
        self.clock = Clock()
        self.client = ScriptedClient(self.clock)
        sources: list[Source] = [DumpSource(self.config, self.client)]
        if self.config.jobs.enabled:
            sources.append(ProgressSource(self.config, self.client))
        sources.extend(extra)
        self.state = TargetState(self.config, sources, self.clock)

    def round(self, dump: Given, progress: Given | None = None, *, received_at: float = 0.0,
              secrets: tuple[str, ...] = ()) -> Samples:
        """One poll with these answers (progress None: not answered); its samples."""
        self.client.answers = {"dump": answer(dump, received_at, 0.0125)}
        if progress is not None:
            self.client.answers["progress"] = answer(progress, received_at, 0.0045)
        asyncio.run(self.state.poll(secrets))
        return exposition.read_back(self.state.published.rendered)

    def text(self, openmetrics: bool = False) -> str:
        """The last round's exposition, as /probe serves it."""
        return exposition.merge([self.state.published.rendered], openmetrics).decode()
