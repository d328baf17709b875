"""How a fetch from a Sigma server fails: one `PollError`, one reason of a closed set.

The reason is decided once, where the failure happens (the transport for the
connection and the HTTP framing, the client for the status, the encoding and
the JSON, the Sigma sources for the answer's own `ec`); nothing translates
it again on the way up.
"""

from __future__ import annotations

REASONS = (
    "timeout",  # no complete answer within the target's timeout (one deadline)
    "connect",  # refused, unreachable, reset, closed before the answer was complete
    "tls",
    "http_status",  # an answer, but not 2xx (a redirect too: never followed)
    "too_large",
    "protocol",  # not valid HTTP: bad framing, a truncated or undecodable body
    "invalid_json",
    "invalid_schema",
    "api_error",  # Sigma answered, but refused the call: `ec` present and not 0
)


class SourceError(Exception):
    """A source's read failed for `reason`, one of that source's declared reasons.

    Every source raises this (or a subclass) and nothing else it foresaw;
    its `execute()` (collect/source.py) counts the reason.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class PollError(SourceError):
    """A fetch from a Sigma server failed for `reason`, one of REASONS."""

    def __init__(self, reason: str, message: str) -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown poll error reason {reason!r}")
        super().__init__(reason, message)
