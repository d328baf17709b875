"""The `--help` layout every subcommand shares: defaults shown once, and only real ones.

argparse's ArgumentDefaultsHelpFormatter appends `(default: X)` to every
option, even `(default: None)` for a flag that has none, `(default: False)`
for a switch, `(default: [])` for a repeatable one, and a second default
after a help text that already names it
(`(default: the target's timeout, else 5s) (default: None)`).
"""

from __future__ import annotations

import argparse


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """ArgumentDefaultsHelpFormatter without the defaults that say nothing."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        # Identity, not equality: a default of 0 is worth showing (0 == False).
        says_nothing = default is None or default is False or default is argparse.SUPPRESS \
            or default == []  # a repeatable flag given no times
        if says_nothing or "default" in text:
            return text
        return super()._get_help_string(action)
