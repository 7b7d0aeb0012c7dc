"""Names as data: a class or model name drawn into Markdown or a plot shows as written, and injects nothing.

A class folder may be named ``a|b`` (which would split a table cell), ``![x](x.png)`` or
``<img onerror=...>`` (markup), or ``$\\undefinedcmd{$`` (which matplotlib parses as mathtext and
fails on). Every place that writes a user's name into Markdown or a plot passes it through here.
"""

from __future__ import annotations

# CommonMark lets a backslash escape any ASCII punctuation; these are the ones that start markup or end a cell.
# HTML's own characters become entities instead, which every Markdown renderer shows as written.
# So do "$" (GitHub's math) and "~" (strikethrough), which not every renderer lets a backslash escape.
_MARKDOWN_SPECIAL = set("\\`*_{}[]()#+-.!|")
_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", "$": "&#36;", "~": "&#126;"}


def markdown_text(name: object) -> str:
    """``name`` as literal Markdown text on one line (a table cell or a sentence)."""
    text = " ".join(str(name).split("\n")).replace("\r", " ")
    return "".join(
        _ENTITIES.get(character) or (f"\\{character}" if character in _MARKDOWN_SPECIAL else character)
        for character in text
    )


def plot_text(name: object) -> str:
    """``name`` as a matplotlib label shown as written: ``$`` would start mathtext, so it is escaped."""
    return " ".join(str(name).splitlines()).replace("$", r"\$")
