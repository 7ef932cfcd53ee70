"""How the everyday commands look on a screen: tables fitted to the
terminal's width, status words in colour (only on a terminal, never with
NO_COLOR set), times as ages ("3m ago")."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import TextIO

import click

ELLIPSIS = "…"

_STATUS_COLOURS = {
    "SUCCEEDED": "green",
    "FAILED": "red",
    "RUNNING": "cyan",
    "STARTING": "cyan",
    "RUNNABLE": "yellow",
    "PENDING": "yellow",
    "SUBMITTED": "yellow",
    "VALID": "green",
    "INVALID": "red",
    "ENABLED": "green",
    "DISABLED": "yellow",
    "ACTIVE": "green",
    "INACTIVE": "yellow",
}


def is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def colour_on(stream: TextIO | None = None) -> bool:
    """Colour only for a person at a terminal: https://no-color.org asks that
    NO_COLOR, set to anything, turns it off."""
    return "NO_COLOR" not in os.environ and is_terminal(stream or sys.stdout)


def width(stream: TextIO | None = None) -> int | None:
    """The width to fit lines in: the terminal's, or $COLUMNS when set. None
    (no limit) when output goes to a pipe or a file without COLUMNS, so that
    scripts reading a table get whole cells."""
    if os.environ.get("COLUMNS") or is_terminal(stream or sys.stdout):
        return shutil.get_terminal_size().columns
    return None


def paint(word: str, on: bool) -> str:
    """A status word in its colour when `on`; `word` may be padded."""
    colour = _STATUS_COLOURS.get(word.strip())
    return click.style(word, fg=colour) if on and colour else word


def clip(text: str, room: int) -> str:
    """`text` in at most `room` characters, an ellipsis marking a cut."""
    text = " ".join(text.split()) if "\n" in text else text
    if len(text) <= room:
        return text
    return text[: max(room - 1, 0)] + ELLIPSIS if room > 0 else ""


def ago(ms: int | None, now_ms: int) -> str:
    """An age as a person reads it at a glance: 12s ago, 3m ago, 5h ago, 2d ago."""
    if ms is None:
        return "-"
    seconds = max(now_ms - ms, 0) // 1000
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def moment(ms: int | None, now_ms: int) -> str:
    """A local date and time with its age: 2025-01-02 10:11:12 (3m ago)."""
    if ms is None:
        return "-"
    when = datetime.fromtimestamp(ms / 1000).astimezone()
    return f"{when:%Y-%m-%d %H:%M:%S} ({ago(ms, now_ms)})"


def duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def table(
    head: Sequence[str],
    body: Sequence[Sequence[str]],
    *,
    shrink: Sequence[tuple[int, int]] = (),
    right: Collection[int] = (),
    status: Collection[int] = (),
) -> str:
    """An aligned table, a rule of dashes under its head.

    When it is wider than the terminal, columns give up room as `shrink`
    says: (column, down to this width) steps, in order, so that several
    columns can each keep a readable share before any is cut to the bone;
    no column goes below its title's width (or 4). Cut cells end in an
    ellipsis. Columns not named (ids, statuses, numbers) are never cut: a
    cut id is useless. Columns in `right` are right-aligned; cells of
    `status` are painted."""
    rows = [[" ".join(c.split()) for c in r] for r in body]
    widths = [max([len(head[i]), *(len(r[i]) for r in rows)]) for i in range(len(head))]
    limit = width()
    if limit is not None:
        excess = sum(widths) + 2 * (len(widths) - 1) - limit
        for i, floor in shrink:
            if excess <= 0:
                break
            give = min(excess, widths[i] - max(floor, len(head[i]), 4))
            if give > 0:
                widths[i] -= give
                excess -= give
    on = colour_on()

    def line(cells: Sequence[str], painted: bool) -> str:
        out = []
        for i, (cell, room) in enumerate(zip(cells, widths, strict=True)):
            text = clip(cell, room)
            text = text.rjust(room) if i in right else text.ljust(room)
            out.append(paint(text, on) if painted and i in status else text)
        return "  ".join(out).rstrip()

    title = line(head, False)
    if on:
        title = click.style(title, bold=True)
    rule = "  ".join("-" * w for w in widths)
    return "\n".join([title, rule, *(line(r, True) for r in rows)])
