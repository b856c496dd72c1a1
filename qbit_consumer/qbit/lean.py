"""requests without a character-set guesser, which qBittorrent's answers never need.

requests imports charset_normalizer (2.7 MB of resident memory on a NAS) to guess the encoding
of a text answer that names none. qBittorrent's text answers name UTF-8, and JSON is decoded
by requests' own UTF detection, so nothing here ever guesses; without a guesser requests
decodes such an answer as UTF-8 (``Response.text``), which is what qBittorrent sends. Marking
the guessers absent in ``sys.modules`` before requests is first imported is Python's way to
make an import fail; requests supports that (with a warning, silenced here). A process that
imported requests already (a test) keeps its guesser. ``tests/unit/test_lean_imports.py``
checks that the service's imports stay lean.
"""

from __future__ import annotations

import sys
import warnings

GUESSERS = ("charset_normalizer", "chardet")


def leave_out_charset_guessing() -> None:
    if "requests" in sys.modules:
        return
    for name in GUESSERS:
        sys.modules.setdefault(name, None)  # type: ignore[assignment]  # "absent" (import docs)
    warnings.filterwarnings(
        "ignore", message="Unable to find acceptable character detection", module="requests"
    )
