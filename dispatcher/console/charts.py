"""Server-rendered SVG bar charts (no script, nothing from a CDN)."""

from __future__ import annotations

from collections.abc import Sequence

from markupsafe import Markup, escape

WIDTH = 560
ROW = 24
LABEL = 200


def bars(data: Sequence[tuple[str, int]], title: str) -> Markup:
    """Horizontal bars with their values; an empty chart says so."""
    if not data:
        return Markup('<p class="muted">{}: nothing yet.</p>').format(title)
    peak = max(v for _, v in data) or 1
    height = ROW * len(data) + 8
    parts = [
        f'<svg class="chart" role="img" viewBox="0 0 {WIDTH} {height}" '
        f'width="100%" preserveAspectRatio="xMinYMin meet">',
        f"<title>{escape(title)}</title>",
    ]
    for i, (label, value) in enumerate(data):
        y = i * ROW + 4
        width = max(1, int((WIDTH - LABEL - 60) * value / peak))
        parts.append(
            f'<text x="{LABEL - 6}" y="{y + 15}" text-anchor="end" class="chart-label">'
            f"{escape(str(label)[:32])}</text>"
            f'<rect x="{LABEL}" y="{y}" width="{width}" height="{ROW - 6}" class="chart-bar"/>'
            f'<text x="{LABEL + width + 4}" y="{y + 15}" class="chart-value">{value}</text>'
        )
    parts.append("</svg>")
    # Every piece of text in it went through escape() above.
    return Markup(f"<figure><figcaption>{escape(title)}</figcaption>{''.join(parts)}</figure>")  # noqa: S704
