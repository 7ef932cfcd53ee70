"""HTML building blocks: escaping, the page frame, small widgets.

Every value that comes from a user (names, reasons, parameters, log lines)
goes through `esc` before it reaches a page: functions here return HTML
strings that are safe to concatenate, and take plain text where they say so.
"""

from __future__ import annotations

import html
import time
from collections.abc import Iterable, Mapping
from urllib.parse import quote, urlencode

from shoal.domain.records import JobStatus

STATUSES = tuple(s.value for s in JobStatus)
ASSET_VERSION = "2"  # bump when dashboard.css/js change, so browsers fetch them anew


def esc(value: object) -> str:
    """Text as HTML (quotes included: safe in attribute values too)."""
    return html.escape("" if value is None else str(value), quote=True)


def job_href(job_id: str, **query: str) -> str:
    """The URL of a job's page (ids of array children hold ':', of nodes '#')."""
    url = "/ui/jobs/" + quote(job_id, safe=":")
    pairs = {k: v for k, v in query.items() if v}
    return url + ("?" + urlencode(pairs) if pairs else "")


def jobs_href(**query: str | None) -> str:
    pairs = {k: v for k, v in query.items() if v}
    return "/ui/jobs" + ("?" + urlencode(pairs) if pairs else "")


def link(href: str, text: object, cls: str = "") -> str:
    attr = f' class="{esc(cls)}"' if cls else ""
    return f'<a href="{esc(href)}"{attr}>{esc(text)}</a>'


def timestamp(ms: int | None) -> str:
    """An epoch-ms time as UTC text in a <time> (the script shows it in local time)."""
    if not ms:
        return '<span class="muted">-</span>'
    text = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms / 1000)) + "Z"
    return f'<time data-ms="{int(ms)}" datetime="{text}">{text}</time>'


def duration(start: int | None, stop: int | None, now: int) -> str:
    if not start:
        return ""
    seconds = max(0, ((stop or now) - start) // 1000)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def badge(status: str, element_id: str = "") -> str:
    ident = f' id="{esc(element_id)}"' if element_id else ""
    return f'<span{ident} class="badge s-{esc(status)}">{esc(status)}</span>'


def table(headers: Iterable[str], rows: Iterable[str], *, cls: str = "", body_id: str = "") -> str:
    """A table; `headers` are plain text, `rows` ready-made <tr> HTML."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    ident = f' id="{esc(body_id)}"' if body_id else ""
    attr = f' class="{esc(cls)}"' if cls else ""
    return (
        f"<table{attr}><thead><tr>{head}</tr></thead><tbody{ident}>{''.join(rows)}</tbody></table>"
    )


def row(*cells: str) -> str:
    """A <tr> of ready-made cell HTML."""
    return "<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


def key_values(pairs: Mapping[str, str]) -> str:
    """A definition list; keys plain text, values ready-made HTML."""
    items = "".join(f"<dt>{esc(k)}</dt><dd>{v}</dd>" for k, v in pairs.items())
    return f'<dl class="kv">{items}</dl>'


def progress(summary: Mapping[str, int], element_id: str = "") -> str:
    """A stacked bar of an array's children by status, as inline SVG (the
    script moves the same rectangles when counts change)."""
    total = sum(summary.values()) or 1
    x = 0.0
    rects = []
    for status in STATUSES:
        width = 1000 * summary.get(status, 0) / total
        rects.append(
            f'<rect class="f-{status}" data-status="{status}" x="{x:.1f}" y="0" '
            f'width="{width:.1f}" height="10"></rect>'
        )
        x += width
    ident = f' id="{esc(element_id)}"' if element_id else ""
    return (
        f'<svg{ident} class="bar" viewBox="0 0 1000 10" preserveAspectRatio="none" '
        f'role="img" aria-label="children by status">{"".join(rects)}</svg>'
    )


def page(title: str, body: str, *, nav: str = "", flash: str = "", error: str = "") -> str:
    """The whole document around `body` (HTML). `title`, `flash` and `error` are text."""
    notes = ""
    if flash:
        notes += f'<p class="flash" role="status">{esc(flash)}</p>'
    if error:
        notes += f'<p class="error" role="alert">{esc(error)}</p>'
    tabs = "".join(
        f'<a href="{href}"{" aria-current=page" if nav == key else ""}>{label}</a>'
        for key, href, label in (("overview", "/ui", "Overview"), ("jobs", "/ui/jobs", "Jobs"))
    )
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)} · shoal</title>"
        '<link rel="icon" href="/ui/static/favicon.svg" type="image/svg+xml">'
        f'<link rel="stylesheet" href="/ui/static/dashboard.css?v={ASSET_VERSION}">'
        f'<script src="/ui/static/dashboard.js?v={ASSET_VERSION}" defer></script>'
        "</head><body>"
        f'<header><a class="brand" href="/ui">shoal</a><nav>{tabs}</nav></header>'
        f"<main>{notes}{body}</main></body></html>"
    )
