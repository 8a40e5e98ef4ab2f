"""Callback text on an operator's terminal: shown, never obeyed.

Whatever a user says, an LLM answers or a signed callback carries ends up in ``roomwarden``'s
tables and transcripts. Printed raw, an ESC sequence would drive the operator's terminal (move
the cursor, rewrite earlier lines, set the window title) and rich's ``[markup]`` would restyle or
hide text. Every value from a callback goes through ``plain`` (for plain output) or ``markup``
(for rich output) on its way out.
"""

from __future__ import annotations

import re

from rich.markup import escape

# C0 controls (newline and tab included: inside a value they would forge lines and columns),
# DEL, and the C1 controls (0x9b is a one-byte CSI to some terminals).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def _escaped(match: re.Match[str]) -> str:
    return f"\\x{ord(match.group()):02x}"


def plain(value: object) -> str:
    """``value`` as text with every control character written out (``\\x1b``), so it shows."""
    return _CONTROL.sub(_escaped, str(value))


def markup(value: object) -> str:
    """``plain(value)``, also safe inside rich markup (``[bold]`` stays text)."""
    return escape(plain(value))


def lines(text: str) -> str:
    """Formatted output (a transcript) whose own line breaks stay, with each line ``plain``."""
    return "\n".join(plain(line) for line in text.split("\n"))
