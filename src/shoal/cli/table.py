"""Plain aligned text tables for the CLI (no dependency: `rich` is not one
of shoal's, and a table of numbers needs only padding)."""

from __future__ import annotations

from collections.abc import Sequence


def render(
    head: Sequence[str],
    body: Sequence[Sequence[str]],
    footer: Sequence[str] | None = None,
    *,
    right_from: int = 0,
) -> str:
    """Columns padded to their widest cell, two spaces apart; columns from
    index `right_from` on are right-aligned (numbers). A rule of dashes sits
    under the head and above the footer."""
    rows = [list(head), *[list(r) for r in body], *([list(footer)] if footer else [])]
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]

    def line(cells: Sequence[str]) -> str:
        padded = [
            c.rjust(w) if i >= right_from else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(padded).rstrip()

    rule = "  ".join("-" * w for w in widths)
    out = [line(head), rule, *(line(r) for r in body)]
    if footer:
        out += [rule, line(footer)]
    return "\n".join(out)
