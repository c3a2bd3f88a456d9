"""Charts for the ops dashboard and the HTML report, as inline SVG strings written by hand.

Why not matplotlib's SVG backend (``asr/plots.py`` draws PNG files with it): a page renders several
charts per request, and hand-written SVG takes well under a millisecond where matplotlib takes ~100 ms
and embeds its fonts as paths; here text stays text (the browser's fonts draw Korean), the output is a
few kilobytes, and every label goes through :func:`html.escape` — slice values, model versions and alert
details come from the catalog. The conventions follow ``asr/plots.py``: values arrive as fractions
and are shown in percent when ``percent``; bars are ``(label, value, ci low, ci high)``; the first colour
is the same blue. The SVG has no ``xmlns`` and references nothing outside itself (HTML5 inline SVG), so a
report that embeds it stays self-contained.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from html import escape

# seaborn "deep" (the first is asr/plots.py's bar colour)
PALETTE = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c", "#ccb974",
           "#64b5cd")
ALERT_COLOUR = "#b3261e"
FONT = 'font-family="system-ui, sans-serif" font-size="11"'
TIME_STEPS = (timedelta(minutes=5), timedelta(minutes=15), timedelta(hours=1), timedelta(hours=3),
              timedelta(hours=6), timedelta(hours=12), timedelta(days=1), timedelta(days=2), timedelta(days=7),
              timedelta(days=14), timedelta(days=30))


@dataclass(frozen=True)
class Point:
    """One value at time ``t`` (aware UTC), with its confidence interval when known."""

    t: datetime
    value: float | None
    low: float | None = None
    high: float | None = None


@dataclass(frozen=True)
class Series:
    label: str
    points: Sequence[Point]
    dashed: bool = False


@dataclass(frozen=True)
class Marker:
    """An alert drawn on a time series: a triangle at (``t``, ``value``) with ``label`` as its tooltip."""

    t: datetime
    value: float | None
    label: str


@dataclass(frozen=True)
class Bar:
    """One row of a bar chart: ``values`` = (series name, value, ci low, ci high), lows/highs optional."""

    label: str
    values: Sequence[tuple[str, float | None, float | None, float | None]] = field(default_factory=tuple)


def _fmt(v: float, percent: bool, step: float | None = None) -> str:
    if percent:
        v *= 100
        step = step * 100 if step else None
    decimals = 0 if step is None or step >= 1 else min(3, math.ceil(-math.log10(step)))
    text = f"{v:.{decimals}f}" if step else f"{v:.3g}"
    return text + ("%" if percent else "")


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About ``count`` round tick values covering [low, high] (1, 2, 5 × 10^k steps)."""
    if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        high = low + 1
    raw = (high - low) / max(count, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    start = math.floor(low / step) * step
    ticks = []
    v = start
    while v <= high + step * 1e-9:
        ticks.append(round(v, 12))
        v += step
    if ticks[-1] < high:
        ticks.append(round(v, 12))
    return ticks


def _time_ticks(t0: datetime, t1: datetime, count: int = 7) -> tuple[list[datetime], str]:
    span = (t1 - t0) or timedelta(hours=1)
    step = next((s for s in TIME_STEPS if span / s <= count), TIME_STEPS[-1])
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    first = epoch + math.ceil((t0 - epoch) / step) * step
    ticks = []
    t = first
    while t <= t1:
        ticks.append(t)
        t += step
    fmt = "%m-%d" if step >= timedelta(days=1) else ("%H:%M" if span <= timedelta(days=1) else "%m-%d %H:%M")
    return ticks, fmt


class _Frame:
    """The plot area of a chart and its data → pixel mapping."""

    def __init__(self, width: int, height: int, left: int = 52, right: int = 12, top: int = 40, bottom: int = 30):
        self.width, self.height = width, height
        self.x0, self.x1, self.y0, self.y1 = left, width - right, top, height - bottom

    def open(self, title: str, desc: str = "") -> list[str]:
        out = [f'<svg class="chart" viewBox="0 0 {self.width} {self.height}" width="{self.width}" '
               f'height="{self.height}" role="img" aria-label="{escape(title)}" {FONT}>',
               f"<title>{escape(title)}</title>"]
        if desc:
            out.append(f"<desc>{escape(desc)}</desc>")
        out.append(f'<text x="{self.x0}" y="15" font-size="13" font-weight="600">{escape(title)}</text>')
        return out


def _legend(items: Sequence[tuple[str, str]], x: float, y: float, max_x: float) -> list[str]:
    out = []
    for label, colour in items:
        width = 16 + 6.5 * len(label)
        if x + width > max_x:
            break
        out.append(f'<rect x="{x:.1f}" y="{y - 8:.1f}" width="10" height="10" fill="{colour}"/>'
                   f'<text x="{x + 13:.1f}" y="{y + 1:.1f}">{escape(label)}</text>')
        x += width + 10
    return out


def time_series_svg(series: Sequence[Series], *, title: str, markers: Sequence[Marker] = (), percent: bool = False,
                    y_label: str = "", since: datetime | None = None, until: datetime | None = None,
                    width: int = 720, height: int = 260, y_min: float | None = 0.0) -> str:
    """Lines over time, each with its confidence band (``low``/``high``) shaded, and alert markers.

    ``since``/``until`` fix the time axis (default: the data's extent); ``y_min`` (None: from the data).
    Gaps (``value`` None) break a line. With no data the chart says so instead of drawing empty axes.
    """
    f = _Frame(width, height)
    out = f.open(title, y_label)
    values = [v for s in series for p in s.points for v in (p.value, p.low, p.high) if v is not None]
    values += [m.value for m in markers if m.value is not None]
    times = [p.t for s in series for p in s.points] + [m.t for m in markers]
    if not values or not times:
        out.append(f'<text x="{width / 2:.0f}" y="{height / 2:.0f}" text-anchor="middle" fill="#6b6b70">'
                   "no data in this range</text></svg>")
        return "".join(out)
    t0, t1 = since or min(times), until or max(times)
    if t1 <= t0:
        t1 = t0 + timedelta(hours=1)
    lo = min(values) if y_min is None else min(y_min, min(values))
    ticks = nice_ticks(lo, max(values) * 1.05 if max(values) > 0 else 1.0)
    ymin, ymax = ticks[0], ticks[-1]
    step = ticks[1] - ticks[0] if len(ticks) > 1 else None

    def x(t: datetime) -> float:
        return f.x0 + (f.x1 - f.x0) * ((t - t0) / (t1 - t0))

    def y(v: float) -> float:
        return f.y1 - (f.y1 - f.y0) * ((v - ymin) / ((ymax - ymin) or 1))

    for v in ticks:
        out.append(f'<line x1="{f.x0}" x2="{f.x1}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#e4e4ea"/>'
                   f'<text x="{f.x0 - 4}" y="{y(v) + 4:.1f}" text-anchor="end">{_fmt(v, percent, step)}</text>')
    tticks, tfmt = _time_ticks(t0, t1)
    for t in tticks:
        out.append(f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{f.y1}" y2="{f.y1 + 4}" stroke="#888"/>'
                   f'<text x="{x(t):.1f}" y="{f.y1 + 16}" text-anchor="middle">{t.strftime(tfmt)}</text>')
    out.append(f'<line x1="{f.x0}" x2="{f.x1}" y1="{f.y1}" y2="{f.y1}" stroke="#888"/>')
    legend = []
    for i, s in enumerate(series):
        colour = PALETTE[i % len(PALETTE)] if not s.dashed else "#6b6b70"
        legend.append((s.label, colour))
        pts = [p for p in s.points if t0 <= p.t <= t1]
        band = [p for p in pts if p.low is not None and p.high is not None]
        if len(band) > 1:
            upper = " ".join(f"{x(p.t):.1f},{y(p.high):.1f}" for p in band)  # type: ignore[arg-type]
            lower = " ".join(f"{x(p.t):.1f},{y(p.low):.1f}" for p in reversed(band))  # type: ignore[arg-type]
            out.append(f'<polygon class="band" points="{upper} {lower}" fill="{colour}" fill-opacity="0.15"/>')
        for run in _runs(pts):
            coords = " ".join(f"{x(p.t):.1f},{y(p.value):.1f}" for p in run)  # type: ignore[arg-type]
            dash = ' stroke-dasharray="4 3"' if s.dashed else ""
            if len(run) == 1:
                out.append(f'<circle cx="{x(run[0].t):.1f}" cy="{y(run[0].value):.1f}" r="2.5" '  # type: ignore[arg-type]
                           f'fill="{colour}"/>')
            else:
                out.append(f'<polyline class="line" points="{coords}" fill="none" stroke="{colour}" '
                           f'stroke-width="1.8"{dash}/>')
    for m in markers:
        if not t0 <= m.t <= t1:
            continue
        mx, my = x(m.t), y(m.value if m.value is not None else ymax)
        out.append(f'<path class="alert-marker" d="M{mx:.1f},{my - 9:.1f} l5,8 h-10 z" fill="{ALERT_COLOUR}">'
                   f"<title>{escape(m.label)}</title></path>")
    out += _legend(legend, f.x0, 30, f.x1)
    out.append("</svg>")
    return "".join(out)


def _runs(points: Sequence[Point]) -> list[list[Point]]:
    runs: list[list[Point]] = [[]]
    for p in points:
        if p.value is None:
            runs.append([])
        else:
            runs[-1].append(p)
    return [r for r in runs if r]


def bars_svg(rows: Sequence[Bar], *, title: str, percent: bool = False, width: int = 720,
             x_max: float | None = None, target: float | None = None) -> str:
    """Horizontal bars, one group per row and one bar per series in it, with CI whiskers when given.
    ``target``: a dashed vertical line (e.g. 100 % of a quota)."""
    names = list(dict.fromkeys(name for r in rows for name, *_ in r.values))
    per_row = max(len(names), 1)
    bar_h = 12
    row_h = per_row * bar_h + 8
    label_w = min(180, 12 + 7 * max((len(r.label) for r in rows), default=4))
    f = _Frame(width, 50 + row_h * max(len(rows), 1) + 24, left=label_w, top=40, bottom=24)
    out = f.open(title)
    values = [v for r in rows for _, val, lo, hi in r.values for v in (val, lo, hi) if v is not None]
    if not values:
        out.append(f'<text x="{width / 2:.0f}" y="{f.height / 2:.0f}" text-anchor="middle" fill="#6b6b70">'
                   "no data</text></svg>")
        return "".join(out)
    top = max(values + ([target] if target else []))
    ticks = nice_ticks(0, x_max if x_max is not None else (top * 1.05 or 1.0))
    xmax = ticks[-1]
    step = ticks[1] - ticks[0] if len(ticks) > 1 else None

    def x(v: float) -> float:
        return f.x0 + (f.x1 - f.x0) * (max(0.0, min(v, xmax)) / (xmax or 1))

    for v in ticks:
        out.append(f'<line x1="{x(v):.1f}" x2="{x(v):.1f}" y1="{f.y0}" y2="{f.y1}" stroke="#e4e4ea"/>'
                   f'<text x="{x(v):.1f}" y="{f.y1 + 14}" text-anchor="middle">{_fmt(v, percent, step)}</text>')
    colours = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(names)}
    for i, r in enumerate(rows):
        y_row = f.y0 + 4 + i * row_h
        out.append(f'<text x="{f.x0 - 6}" y="{y_row + row_h / 2:.1f}" text-anchor="end">{escape(r.label)}</text>')
        for j, (name, val, lo, hi) in enumerate(r.values):
            if val is None:
                continue
            yb = y_row + j * bar_h
            tip = f"{r.label} · {name}: {_fmt(val, percent)}"
            if lo is not None and hi is not None:
                tip += f" ({_fmt(lo, percent)}–{_fmt(hi, percent)})"
            out.append(f'<rect class="bar" x="{f.x0}" y="{yb:.1f}" width="{x(val) - f.x0:.1f}" '
                       f'height="{bar_h - 2}" fill="{colours[name]}"><title>{escape(tip)}</title></rect>')
            if lo is not None and hi is not None:
                ym = yb + (bar_h - 2) / 2
                out.append(f'<path d="M{x(lo):.1f},{ym:.1f} H{x(hi):.1f} M{x(lo):.1f},{ym - 3:.1f} v6 '
                           f'M{x(hi):.1f},{ym - 3:.1f} v6" stroke="#333" fill="none"/>')
    if target is not None:
        out.append(f'<line x1="{x(target):.1f}" x2="{x(target):.1f}" y1="{f.y0}" y2="{f.y1}" stroke="#333" '
                   'stroke-dasharray="4 3"/>')
    if len(names) > 1 or (names and names[0]):
        out += _legend([(n, colours[n]) for n in names], f.x0, 30, f.x1)
    out.append("</svg>")
    return "".join(out)


def stacked_bars_svg(starts: Sequence[datetime], stacks: Mapping[str, Sequence[int]], *, title: str,
                     bucket: timedelta, width: int = 720, height: int = 220) -> str:
    """Counts per time bucket (``starts``), stacked by key (e.g. model version): traffic and its split."""
    f = _Frame(width, height)
    out = f.open(title)
    totals = [sum(col) for col in zip(*stacks.values(), strict=True)] if stacks else []
    if not starts or not totals or max(totals) == 0:
        out.append(f'<text x="{width / 2:.0f}" y="{height / 2:.0f}" text-anchor="middle" fill="#6b6b70">'
                   "no traffic in this range</text></svg>")
        return "".join(out)
    t0, t1 = starts[0], starts[-1] + bucket
    ticks = nice_ticks(0, max(totals) * 1.05)
    ymax = ticks[-1]

    def x(t: datetime) -> float:
        return f.x0 + (f.x1 - f.x0) * ((t - t0) / (t1 - t0))

    def h(v: float) -> float:
        return (f.y1 - f.y0) * v / (ymax or 1)

    for v in ticks:
        yv = f.y1 - h(v)
        out.append(f'<line x1="{f.x0}" x2="{f.x1}" y1="{yv:.1f}" y2="{yv:.1f}" stroke="#e4e4ea"/>'
                   f'<text x="{f.x0 - 4}" y="{yv + 4:.1f}" text-anchor="end">{int(v)}</text>')
    tticks, tfmt = _time_ticks(t0, t1)
    for t in tticks:
        out.append(f'<text x="{x(t):.1f}" y="{f.y1 + 16}" text-anchor="middle">{t.strftime(tfmt)}</text>')
    bw = max((f.x1 - f.x0) / len(starts) - 1, 1)
    colours = {k: PALETTE[i % len(PALETTE)] for i, k in enumerate(stacks)}
    for i, start in enumerate(starts):
        base = f.y1
        for key, counts in stacks.items():
            c = counts[i]
            if not c:
                continue
            top = base - h(c)
            out.append(f'<rect x="{x(start):.1f}" y="{top:.1f}" width="{bw:.1f}" height="{base - top:.1f}" '
                       f'fill="{colours[key]}"><title>{start:%Y-%m-%d %H:%M} · {escape(key)}: {c}</title></rect>')
            base = top
    out.append(f'<line x1="{f.x0}" x2="{f.x1}" y1="{f.y1}" y2="{f.y1}" stroke="#888"/>')
    out += _legend([(k, colours[k]) for k in stacks], f.x0, 30, f.x1)
    out.append("</svg>")
    return "".join(out)
