"""Text and names that come from the remote machine (or a card), made safe to show or use.

A hostile or broken remote controls its hostname, `nvidia-smi` output, error strings and
every file name it lists. Printed raw, an ESC sequence can rewrite the terminal, retitle
it, or (OSC 52) put text on the user's clipboard; a `../` name can write outside the
destination folder. Everything from the remote passes through here first.
"""

from __future__ import annotations

import os
import re
import unicodedata
from typing import Optional

# C0 and C1 controls, DEL, and the invisible formatting characters (bidi overrides, zero-width
# joiners, line/paragraph separators) that make text display as something it is not.
_UNSAFE_CATEGORIES = {"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"}
_WINDOWS_RESERVED = re.compile(r"(?i)^(con|prn|aux|nul|com[0-9]|lpt[0-9])(\..*)?$")
MAX_NAME_BYTES = 255


def _escape(ch: str) -> str:
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def clean_line(text: object, limit: Optional[int] = 400) -> str:
    """One line with every control or formatting character shown as `\\xNN` (newlines too)."""
    value = text if isinstance(text, str) else str(text)
    out = "".join(_escape(ch) if unicodedata.category(ch) in _UNSAFE_CATEGORIES else ch for ch in value)
    if limit is not None and len(out) > limit:
        out = out[:limit - 3] + "..."
    return out


def clean_text(text: object) -> str:
    """Several lines: newlines and tabs stay, every other control character is shown escaped."""
    value = text if isinstance(text, str) else str(text)
    return "\n".join(clean_line(line, limit=None).replace("\\x09", "\t")
                     for line in value.replace("\r\n", "\n").split("\n"))


def name_problem(name: object, windows: Optional[bool] = None) -> Optional[str]:
    """Why a name from a remote listing is not one plain path component (None when it is).

    Refused everywhere: empty, `.`, `..`, any `/` or `\\` (a separator somewhere), NUL and
    control characters, a drive letter (`C:x`), names too long for any file system. On
    Windows also `:` (a stream), reserved names (`NUL`, `COM1.txt`) and a trailing dot or
    space, which Windows silently drops. What is left can only name an entry in its folder.
    """
    windows = (os.name == "nt") if windows is None else windows
    if not isinstance(name, str) or name == "":
        return "an empty name"
    if name in (".", ".."):
        return f"the name {name!r} points at a folder, not an entry in it"
    if "/" in name or "\\" in name:
        return "a name with a path separator in it"
    if any(unicodedata.category(ch) in _UNSAFE_CATEGORIES for ch in name):
        return "a name with a control character in it"
    if len(name) >= 2 and name[1] == ":" and name[0].isascii() and name[0].isalpha():
        return "a name starting with a drive letter"
    if windows and ":" in name:
        return "a name with ':' in it (a stream on Windows)"
    if windows and (_WINDOWS_RESERVED.match(name) or name.endswith((" ", "."))):
        return "a name Windows reserves or cannot store"
    if len(name.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
        return "a name longer than 255 bytes"
    return None


def shown_name(name: object) -> str:
    """A remote name quoted for a warning line (repr escapes everything invisible)."""
    return clean_line(repr(name) if isinstance(name, str) else repr(str(name)), limit=200)
