"""Console output that never crashes a run: under a non-UTF-8 encoding (``PYTHONIOENCODING=ascii``,
``latin-1``, a C locale) characters the stream cannot encode degrade to ASCII (± → +/-, → → ->,
• → *, × → x, — → -, anything else → ?) instead of raising UnicodeEncodeError."""

from __future__ import annotations

import codecs
import sys

ASCII_FALLBACK = {
    "±": "+/-", "→": "->", "←": "<-", "•": "*", "×": "x", "—": "-", "–": "-", "…": "...", "≈": "~",
    "≤": "<=", "≥": ">=", "µ": "u", "━": "-", "─": "-", "│": "|", "✓": "v", "✗": "x", "·": ".",
}
ERRORS = "kdexp_ascii"


def _fallback(err: UnicodeError) -> tuple[str, int]:
    if not isinstance(err, UnicodeEncodeError):
        raise err
    text = err.object[err.start : err.end]
    return "".join(ASCII_FALLBACK.get(ch, "?") for ch in text), err.end


codecs.register_error(ERRORS, _fallback)


def ascii_safe_streams() -> None:
    """Make stdout and stderr degrade characters their encoding lacks (idempotent, cheap)."""
    for stream in (sys.stdout, sys.stderr):
        encoding = (getattr(stream, "encoding", None) or "").lower().replace("_", "-")
        if encoding.startswith("utf") or not hasattr(stream, "reconfigure"):
            continue
        try:
            stream.reconfigure(errors=ERRORS)
        except (AttributeError, ValueError, OSError):  # a replaced or closed stream: leave it
            pass
