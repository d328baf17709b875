"""The `--help` layout every subcommand shares: defaults shown once, and only real ones.

argparse's ArgumentDefaultsHelpFormatter appends `(default: X)` to every
option, even `(default: None)` for a flag that has none, `(default: False)`
for a switch, and a second default after a help text that already names it
(`(default: the target's timeout, else 5s) (default: None)`).
"""

from __future__ import annotations

import argparse


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """ArgumentDefaultsHelpFormatter without the defaults that say nothing."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default in (None, False, argparse.SUPPRESS) or "default" in text:
            return text
        return super()._get_help_string(action)
