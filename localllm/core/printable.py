"""Text from model files, servers and file names, made inert before it reaches a terminal."""

from __future__ import annotations

# Bidirectional overrides can make text read differently from what it is (a file name that hides its extension).
_BIDI = {chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A))}


def inert_text(value: object, keep: str = "\n\t") -> str:
    """``value`` as text with its control characters (but those in ``keep``) and bidi overrides shown as escapes."""
    import unicodedata

    text = str(value)
    if any(ch in _BIDI or (unicodedata.category(ch) == "Cc" and ch not in keep) for ch in text):
        text = "".join(ch.encode("unicode_escape").decode("ascii")
                       if ch in _BIDI or (unicodedata.category(ch) == "Cc" and ch not in keep) else ch
                       for ch in text)
    return text
