"""A job's dependencies as a small inline SVG graph: the job on the right,
what it waits for in columns to its left, each box a link to that job."""

from __future__ import annotations

from shoal.web.html import esc, job_href
from shoal.web.reads import Graph

_W, _H, _GAP_X, _GAP_Y = 200, 40, 70, 14


def _label(text: str, limit: int = 26) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def render(graph: Graph) -> str:
    if len(graph.levels) == 1:
        note = "This job depends on no other job."
        if graph.sequential:
            note = "Its children run one after another (SEQUENTIAL)."
        return f'<p class="muted">{esc(note)}</p>'
    depth = len(graph.levels) - 1
    places: dict[str, tuple[int, int]] = {}
    for level, ids in enumerate(graph.levels):
        for row, job_id in enumerate(ids):
            places[job_id] = ((depth - level) * (_W + _GAP_X), row * (_H + _GAP_Y))
    width = (depth + 1) * (_W + _GAP_X) - _GAP_X + 2
    height = max(len(ids) for ids in graph.levels) * (_H + _GAP_Y) - _GAP_Y + 2
    parts: list[str] = []
    for source, target, kind in graph.edges:
        x1, y1 = places[source]
        x2, y2 = places[target]
        x1, y1, y2 = x1 + _W, y1 + _H // 2, y2 + _H // 2
        parts.append(
            f'<path class="edge" d="M{x1},{y1} C{x1 + _GAP_X // 2},{y1} '
            f'{x2 - _GAP_X // 2},{y2} {x2},{y2}"></path>'
        )
        if kind:
            parts.append(
                f'<text class="edge-label" x="{(x1 + x2) // 2}" y="{(y1 + y2) // 2 - 3}" '
                f'text-anchor="middle">{esc(kind)}</text>'
            )
    for job_id, (x, y) in places.items():
        job = graph.jobs[job_id]
        status = str(job.get("status") or "")
        name = str(job.get("jobName") or "(no longer stored)")
        parts.append(
            f'<a href="{esc(job_href(job_id))}"><title>{esc(job_id)}</title>'
            f'<rect class="node f-{esc(status or "gone")}" x="{x + 1}" y="{y + 1}" '
            f'width="{_W}" height="{_H}" rx="5"></rect>'
            f'<text x="{x + 9}" y="{y + 17}">{esc(_label(name))}</text>'
            f'<text class="small" x="{x + 9}" y="{y + 32}">'
            f"{esc(status or '-')} · {esc(_label(job_id, 18))}</text></a>"
        )
    svg = (
        f'<svg class="graph" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="dependency graph">'
        f"{''.join(parts)}</svg>"
    )
    notes = ""
    if graph.sequential:
        notes += '<p class="muted">Its children run one after another (SEQUENTIAL).</p>'
    if graph.truncated:
        notes += '<p class="muted">Deeper dependencies are not drawn.</p>'
    return f'<div class="graph-wrap">{svg}</div>{notes}'
