"""The job states Sigma documents, and what each one means for monitoring.

Sigma Media Live's monitoring page documents five job states: `starting`
(initial launch), `preparing` (getting input and output information),
`started` (launched), `error` (failing; Sigma retries by itself until the
error clears) and `Stop` (stopped). The exporter reads them lower-cased.
They are mapped here, once, on purpose:

- `started`: up, the channel runs. `sigma_job_up` 1.
- `running`: up, as `started` (not documented; older answers have it).
- `starting`, `preparing`: coming up, neither up nor down. `sigma_job_up` 0;
  the alert rules do not count the channel down until it has been without
  running for `job_coming_up_seconds` (alerts/thresholds.yml, 3 minutes),
  counted from when it last ran or first appeared.
- `error`: down (SigmaJobDown pages).
- `stop`: stopped, down: a stopped live channel is off air whoever stopped
  it, so SigmaJobDown pages; a channel stopped on purpose is excluded in the
  exporter's config or silenced (docs/runbooks.md#sigmajobdown).
- anything else: unknown, carried as reported (bounded, see `state_label`),
  down.

`sigma_job_up` says one thing only, whatever the state: 1 while the channel
runs (`started`, `running`), else 0. It stays a pure function of the state
the server reported, so the SLO counts a channel that is coming up as
unavailable (viewers see nothing meanwhile) and an exporter restart changes
nothing. How long a channel may be coming up before it counts as down is the
rules' decision (`sigma:job_down:bool` in alerts/sigma-recording.yml), next
to the other thresholds an operator tunes, not the exporter's.
"""

from __future__ import annotations

import re
from typing import Final

STARTING: Final = "starting"
PREPARING: Final = "preparing"
STARTED: Final = "started"
RUNNING: Final = "running"
ERROR: Final = "error"
STOP: Final = "stop"

# The documented states as read (lower case), in Sigma's order.
DOCUMENTED_STATES: Final[tuple[str, ...]] = (STARTING, PREPARING, STARTED, ERROR, STOP)
UP_STATES: Final = frozenset({STARTED, RUNNING})
COMING_UP_STATES: Final = frozenset({STARTING, PREPARING})

# A state is a label value: one short word. Anything else Sigma sends is
# carried as reported but bounded, so a new or garbled state can neither
# break a query nor grow the label without limit.
MAX_STATE_LENGTH: Final = 32
_NOT_STATE_CHARACTER = re.compile(r"[^a-z0-9_.-]")


def state_label(reported: str) -> str:
    """The `state` label of a reported state: lower case, at most 32 characters
    of `a-z 0-9 _ . -` (any other character becomes `_`)."""
    return _NOT_STATE_CHARACTER.sub("_", reported.lower()[:MAX_STATE_LENGTH])


# What a state means, in words (for the status page and logs): the mapping above.
MEANS_UP: Final = "up"
MEANS_COMING_UP: Final = "coming up"
MEANS_STOPPED: Final = "stopped"
MEANS_DOWN: Final = "down"


def state_meaning(state: str | None) -> str | None:
    """`up`, `coming up`, `stopped` or `down` for a state label; None for no state.

    `stopped` is down for the alerts (SigmaJobDown pages); it is named apart
    only so that a reader sees someone stopped the channel.
    """
    if state is None:
        return None
    if state in UP_STATES:
        return MEANS_UP
    if state in COMING_UP_STATES:
        return MEANS_COMING_UP
    if state == STOP:
        return MEANS_STOPPED
    return MEANS_DOWN
