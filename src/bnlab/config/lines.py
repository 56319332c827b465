"""Where a key is in a TOML file: tomllib reports positions only for syntax errors, so a
validation error finds its key's line here (best effort: ``None`` when it cannot)."""

from __future__ import annotations

import re

_INDEXED = re.compile(r"(.*)\[(\d+)\]")  # "layers[2]" -> ("layers", "2")


def line_of(text: str, dotted_key: str) -> int | None:
    """Best-effort line of ``optimizer.name`` / ``variants[1].model`` / ``epochs`` in ``text``;
    a key that is a table (``optimizer``, ``variants[1]``) is found by its header. Never
    fails: a key it cannot place (a quoted key holding ``.`` or ``[``, say) gives ``None``,
    except a ``[sweep]`` axis (``sweep.optimizer.learning_rate``), whose key is the rest."""
    if dotted_key.startswith("sweep.") and (start := _header_end(text, 0, "sweep", None)):
        axis = re.escape(dotted_key.removeprefix("sweep."))
        match = re.search(rf"^[ \t]*(\"{axis}\"|'{axis}'|{axis})\s*=", text[start:],
                          flags=re.MULTILINE)
        return None if match is None else text.count("\n", 0, start + match.end()) + 1
    *tables, key = dotted_key.split(".")
    start = 0
    for table in tables:
        position = _header_end(text, start, *_split_index(table))
        if position is None:
            return None
        start = position
    key, item = _split_index(key)
    match = re.search(rf"^[ \t{{,]*{re.escape(key)}\s*=", text[start:], flags=re.MULTILINE)
    if not match:
        header = _header_end(text, start, key, item)
        return None if header is None else text.count("\n", 0, header) + 1
    position = start + match.end()
    if item is not None:  # layers[2]: the third inline table of the array (no tables inside)
        braces = table_starts(text, position)
        if item < len(braces):
            position = braces[item]
    return text.count("\n", 0, position) + 1


def _split_index(part: str) -> tuple[str, int | None]:
    """``"layers[2]"`` -> ``("layers", 2)``; ``"name"`` -> ``("name", None)``."""
    match = _INDEXED.fullmatch(part)
    return (match[1], int(match[2])) if match else (part, None)


def _header_end(text: str, start: int, name: str, index: int | None) -> int | None:
    """Offset just after the ``index``-th (default first) ``[name]`` / ``[[name]]`` header in
    ``text[start:]``, or ``None``."""
    headers = list(re.finditer(rf"^\s*\[\[?\s*{re.escape(name)}\s*\]\]?", text[start:],
                               flags=re.MULTILINE))
    position = index or 0
    return start + headers[position].end() if position < len(headers) else None


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
