"""Inline SVG for the Overview page: a histogram with bin edges, correlation colours.

Drawn on the server as plain markup (numbers only, no user text), so the page needs no
plotting library and no script.
"""

from __future__ import annotations

from markupsafe import Markup, escape

from miro_serve.corpus import Histogram

WIDTH, HEIGHT, PAD = 360, 130, 18


def histogram_svg(h: Histogram) -> Markup:
    """Bars of the score histogram, the bin edges as red lines, min and max under the axis."""
    top = max(h.counts) if h.counts and max(h.counts) > 0 else 1
    span = h.hi - h.lo if h.hi > h.lo else 1.0
    plot_h = HEIGHT - PAD
    bar_w = WIDTH / max(len(h.counts), 1)
    parts = [
        f'<svg class="hist" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" '
        f'role="img" aria-label="{escape(h.reward)} histogram">'
    ]
    for i, c in enumerate(h.counts):
        bh = plot_h * c / top
        parts.append(
            f'<rect x="{i * bar_w:.2f}" y="{plot_h - bh:.2f}" width="{max(bar_w - 1, 0.5):.2f}" '
            f'height="{bh:.2f}"><title>{c:,}</title></rect>'
        )
    for e in h.edges:
        x = (e - h.lo) / span * WIDTH
        parts.append(
            f'<line class="edge" x1="{x:.2f}" x2="{x:.2f}" y1="0" y2="{plot_h}">'
            f"<title>edge {e:.6g}</title></line>"
        )
    parts.append(
        f'<text x="0" y="{HEIGHT - 3}">{h.lo:.4g}</text>'
        f'<text x="{WIDTH}" y="{HEIGHT - 3}" text-anchor="end">{h.hi:.4g}</text></svg>'
    )
    return Markup("".join(parts))


def correlation_style(value: float | None) -> str:
    """Background colour of a correlation cell: blue (−1) through white (0) to red (+1)."""
    if value is None:
        return "background:#eee"
    v = max(-1.0, min(1.0, value))
    fade = int(255 * (1 - abs(v)))
    colour = f"rgb(255,{fade},{fade})" if v > 0 else f"rgb({fade},{fade},255)"
    return f"background:{colour}"
