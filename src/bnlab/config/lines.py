"""Where a key is in a TOML file: tomllib reports positions only for syntax errors, so a
validation error finds its key's line here (best effort: ``None`` when it cannot)."""

from __future__ import annotations

import re


def line_of(text: str, dotted_key: str) -> int | None:
    """Best-effort line of ``optimizer.name`` / ``variants[1].model`` / ``epochs`` in ``text``
    (tomllib reports positions only for syntax errors)."""
    *tables, key = dotted_key.split(".")
    start = 0
    for table in tables:
        name, _, index = table.partition("[")
        headers = list(re.finditer(rf"^\s*\[\[?\s*{re.escape(name)}\s*\]\]?", text[start:],
                                   flags=re.MULTILINE))
        position = int(index.rstrip("]")) if index else 0
        if position >= len(headers):
            return None
        start += headers[position].end()
    key, _, item = key.partition("[")
    match = re.search(rf"^[ \t{{,]*{re.escape(key)}\s*=", text[start:], flags=re.MULTILINE)
    if not match:
        return None
    position = start + match.end()
    if item:  # layers[2]: the third inline table of the array (layer tables hold no tables)
        braces = table_starts(text, position)
        index = int(item.rstrip("]"))
        if index < len(braces):
            position = braces[index]
    return text.count("\n", 0, position) + 1


def table_starts(text: str, start: int) -> list[int]:
    """Offsets of the ``{`` that open inline tables in ``text[start:]``, skipping those in
    comments and quoted strings (a commented-out layer is not a layer)."""
    starts, quote, comment = [], "", False
    for offset in range(start, len(text)):
        char = text[offset]
        if comment:
            comment = char != "\n"
        elif quote:
            if char == quote and text[offset - 1] != "\\":
                quote = ""
        elif char in "\"'":
            quote = char
        elif char == "#":
            comment = True
        elif char == "{":
            starts.append(offset)
    return starts
