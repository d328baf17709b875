"""State that turns repeated snapshots into counters.

Sigma reports restarts and errors only as a moving picture (a start time, an
uptime, a sliding window of error lines); Prometheus wants counters. These
small classes remember just enough between polls to count each event once.
"""

from __future__ import annotations

import re
from collections import OrderedDict, defaultdict

from sigma_exporter.source.errorcodes import CLASSES_AND_UNKNOWN, classes_of

# `[08-13 11:48:24] Input timeout (code: INPUT_TIMEOUT)` -> INPUT_TIMEOUT
_CODE = re.compile(r"\(\s*code\s*:\s*([A-Za-z0-9_.\-]{1,64})\s*\)")
UNKNOWN_CODE = "unknown"
# Lines whose code arrives after a job already has MAX_CODES codes count here.
OTHER_CODE = "other"
MAX_CODES = 32


def error_code(line: str) -> str:
    """The `(code: X)` of an error line, or `unknown`."""
    match = _CODE.search(line)
    return match.group(1) if match else UNKNOWN_CODE


class ErrorLineCounter:
    """Counts each distinct error line of one job once, by code and by class.

    The server lists a sliding window of recent lines. A line counts the first
    time it is seen (also at the exporter's first poll); while it stays listed
    it is not counted again; a line that drops out and is replaced by another
    is new. Memory is bounded: only `max_remembered` lines are kept, and the
    lines currently listed are never forgotten. So are the codes, each a
    series for as long as the job exists: a server that invents a new code
    every poll gets `max_codes` of them, and every later new code's lines
    count under `other` (the total stays exact).

    Each line also counts once in each documented class of its code
    (source/errorcodes.py: a code that is both input and output counts in
    both; a code Sigma does not document, or no code, in `unknown`). The
    classes are a closed set, all present from the start at 0; a line counted
    under `other` still counts in the class of its real code.
    """

    __slots__ = ("by_class", "by_code", "max_codes", "max_remembered", "seen")

    def __init__(self, max_remembered: int = 512, max_codes: int = MAX_CODES) -> None:
        self.max_remembered = max_remembered
        self.max_codes = max_codes
        self.seen: OrderedDict[str, None] = OrderedDict()
        self.by_code: defaultdict[str, int] = defaultdict(int)
        self.by_class: dict[str, int] = dict.fromkeys(CLASSES_AND_UNKNOWN, 0)

    def observe(self, lines: tuple[str, ...]) -> None:
        for line in lines:
            if line in self.seen:
                self.seen.move_to_end(line)
                continue
            self.seen[line] = None
            code = error_code(line)
            for error_class in classes_of(code):
                self.by_class[error_class] += 1
            if code not in self.by_code and len(self.by_code) >= self.max_codes:
                code = OTHER_CODE
            self.by_code[code] += 1
        current = set(lines)
        # Forget the oldest lines no longer listed.
        while len(self.seen) > max(self.max_remembered, len(current)):
            oldest = next(iter(self.seen))
            if oldest in current:
                break
            del self.seen[oldest]


class RestartDetector:
    """Counts restarts from a value that must only move one way between polls."""

    __slots__ = ("last", "restarts")

    def __init__(self) -> None:
        self.last: float | None = None
        self.restarts = 0

    def observe_start(self, start: float | None) -> None:
        """A start time that moved means a restart (first sight is not one)."""
        if start is None:
            return
        if self.last is not None and start != self.last:
            self.restarts += 1
        self.last = start

    def observe_uptime(self, uptime: float | None) -> None:
        """An uptime that went down means a restart (first sight is not one)."""
        if uptime is None:
            return
        if self.last is not None and uptime < self.last:
            self.restarts += 1
        self.last = uptime
