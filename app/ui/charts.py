"""Charts for the dashboard, rendered server-side as inline SVG: data in, markup out.

Pure functions, no JavaScript, no charting library. The page's Content-Security-Policy
allows no inline style, so the markup carries geometry only (coordinates, sizes,
`text-anchor`) and every colour, stroke, dash and font comes from the stylesheet through
`class` attributes. Every piece of text (titles, labels, series names, units) is escaped.

Each chart is one `<svg class="chart chart-KIND" viewBox="0 0 640 H" width="100%">` with a
`<title>` (its accessible name) and a `<desc>` (a one-sentence summary), and every bar or
point carries a `<title>` child with its exact value, e.g. "2026-11-29 · succeeded: 42".

Classes the stylesheet styles (all under `.chart`):

- chart kinds: `chart-stacked`, `chart-hbars`, `chart-line`
- axes: `grid` (horizontal tick lines), `axis` (the zero baseline), `tick-label`,
  `category-label`
- stacked bars: `column` (a group per category), `bar`, `series-0` … `series-7` (by
  position, modulo 8), `bar-NAME` (the series name lowered, runs of characters outside
  [a-z0-9-] turned into "-", e.g. `bar-succeeded`; "series" when nothing is left); the
  legend: `legend`, `legend-item`, `swatch` (also carrying `series-N bar-NAME`),
  `legend-label`
- horizontal bars: `row`, `bar`, `item-label`, `value-label`
- line: `area`, `line` (needs `fill: none`), `point`, `over` (a point above the limit),
  `limit` (the dashed budget line), `limit-label`
- `no-data` (the text shown when there is nothing to plot)

Values: NaN and ±inf count as 0, negatives clamp at 0, anything above 1e150 clamps there.
A limit that is NaN or infinite draws no limit line.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

from markupsafe import Markup, escape

__all__ = ["Series", "horizontal_bars", "line_with_limit", "stacked_bars"]

WIDTH = 640
CHAR_W = 6.5  # the estimated advance of one character of the stylesheet's 11px chart font
MAX_VALUE = 1e150  # keeps sums finite
PALETTE = 8  # series-0 … series-7
NO_DATA = "no data"
SVG_NS = "http://www.w3.org/2000/svg"

STACKED_PLOT_H = 200
MAX_BAR_W = 64
LINE_H = 240
HBAR_ROW = 24
HBAR_THICKNESS = 16
CATEGORY_CHARS = 12
LEGEND_CHARS = 24
ITEM_CHARS = 28


@dataclass(frozen=True)
class Series:
    """One stacked series: `name` (also its CSS class suffix, sanitized) and one value per
    category of the chart."""

    name: str
    values: Sequence[float]


# --- values and text ------------------------------------------------------------------------


def _clean(value: float) -> float:
    number = float(value)
    if not math.isfinite(number) or number <= 0:
        return 0.0
    return min(number, MAX_VALUE)


def _format_decimal(number: Decimal) -> str:
    if number == number.to_integral_value():
        number = number.to_integral_value()
    else:
        number = number.quantize(Decimal("0.000001")).normalize()
    return format(number, ",f")


def _num(value: float) -> str:
    """A value for people: thousands separators, at most six decimals, no float noise."""
    return _format_decimal(Decimal(repr(float(value))))


def _with_unit(value: float, unit: str) -> str:
    """ "1 job", "2 jobs": a plural unit loses its s for exactly one."""
    if not unit:
        return _num(value)
    if value == 1 and unit.endswith("s"):
        unit = unit[:-1]
    return f"{_num(value)} {unit}"


def _coord(value: float) -> str:
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-") or "series"


def _chart_id(kind: str, *parts: object) -> str:
    digest = hashlib.sha256(repr((kind, *parts)).encode()).hexdigest()
    return f"chart-{digest[:10]}"


# --- markup -----------------------------------------------------------------------------------


def _tag(name: str, attrs: Mapping[str, str | float], content: str | None = None) -> str:
    """One element; attribute values are escaped (numbers become coordinates), `content` must
    already be markup."""
    rendered = [name]
    for key, value in attrs.items():
        text = _coord(value) if isinstance(value, int | float) else str(escape(value))
        rendered.append(f'{key}="{text}"')
    head = " ".join(rendered)
    return f"<{head}/>" if content is None else f"<{head}>{content}</{name}>"


def _title(text: str) -> str:
    return f"<title>{escape(text)}</title>"


def _text(x: float, y: float, text: str, cls: str, anchor: str = "start") -> str:
    attrs: dict[str, str | float] = {"class": cls, "x": x, "y": y}
    if anchor != "start":
        attrs["text-anchor"] = anchor
    return _tag("text", attrs, str(escape(text)))


def _svg(kind: str, cid: str, title: str, desc: str, height: float, body: str) -> Markup:
    attrs = {
        "xmlns": SVG_NS,
        "class": f"chart chart-{kind}",
        "viewBox": f"0 0 {WIDTH} {_coord(height)}",
        "width": "100%",
        "preserveAspectRatio": "xMidYMid meet",
        "role": "img",
        "aria-labelledby": f"{cid}-title {cid}-desc",
    }
    content = (
        _tag("title", {"id": f"{cid}-title"}, str(escape(title)))
        + _tag("desc", {"id": f"{cid}-desc"}, str(escape(desc)))
        + body
    )
    # Safe: _tag, _title and _text escape every attribute value and every piece of text.
    return Markup(_tag("svg", attrs, content))  # noqa: S704


def _no_data(kind: str, cid: str, title: str, height: float) -> Markup:
    body = _text(WIDTH / 2, height / 2 + 4, NO_DATA, "no-data", "middle")
    return _svg(kind, cid, title, f"{title}: no data.", height, body)


# --- scales -----------------------------------------------------------------------------------


def _nice_ticks(peak: float, *, integral: bool) -> list[Decimal]:
    """3 to 5 ticks from 0, steps of 1, 2, 2.5 or 5 times a power of ten, the last one at or
    above `peak` (> 0). Whole-number data gets whole-number steps."""
    exact = Decimal(repr(peak))
    magnitude = math.floor(math.log10(peak))
    for exponent in range(magnitude - 1, magnitude + 2):
        for mantissa in ("1", "2", "2.5", "5"):
            step = Decimal(mantissa).scaleb(exponent)
            if integral and (step < 1 or step != step.to_integral_value()):
                continue
            intervals = math.ceil(exact / step)
            if intervals <= 4:
                return [step * i for i in range(max(intervals, 2) + 1)]
    raise AssertionError("unreachable: a step of 10**(magnitude+1) covers the peak")


def _tick_margin(ticks: Sequence[Decimal]) -> float:
    return 8 + max(len(_format_decimal(t)) for t in ticks) * CHAR_W + 6


def _y_axis(ticks: Sequence[Decimal], left: float, right: float, top: float, bottom: float) -> str:
    peak = float(ticks[-1])
    parts = []
    for tick in ticks:
        y = bottom - float(tick) / peak * (bottom - top)
        if tick:
            parts.append(_tag("line", {"class": "grid", "x1": left, "x2": right, "y1": y, "y2": y}))
        parts.append(_text(left - 6, y + 4, _format_decimal(tick), "tick-label", "end"))
    parts.append(
        _tag("line", {"class": "axis", "x1": left, "x2": right, "y1": bottom, "y2": bottom})
    )
    return "".join(parts)


def _category_labels(categories: Sequence[str], left: float, band: float, y: float) -> str:
    """The category names under their bands, every n-th one when they would overlap."""
    labels = [_truncate(c, CATEGORY_CHARS) for c in categories]
    width = max(len(label) for label in labels) * CHAR_W + 8
    every = max(1, math.ceil(width / band))
    parts = [
        _text(left + (i + 0.5) * band, y, label, "category-label", "middle")
        for i, label in enumerate(labels)
        if i % every == 0
    ]
    return "".join(parts)


# --- stacked bars -----------------------------------------------------------------------------


def _legend(names: Sequence[str]) -> tuple[str, float]:
    parts = []
    x, y = 8.0, 4.0
    for index, name in enumerate(names):
        label = _truncate(name, LEGEND_CHARS)
        width = 14 + len(label) * CHAR_W + 14
        if x > 8 and x + width > WIDTH:
            x, y = 8.0, y + 18
        swatch_cls = f"swatch series-{index % PALETTE} bar-{_slug(name)}"
        swatch = _tag(
            "rect",
            {"class": swatch_cls, "x": x, "y": y + 1, "width": 10, "height": 10},
            _title(name),
        )
        text = _text(x + 14, y + 10, label, "legend-label")
        parts.append(_tag("g", {"class": "legend-item"}, swatch + text))
        x += width
    return _tag("g", {"class": "legend"}, "".join(parts)), y + 18


def stacked_bars(
    title: str, categories: Sequence[str], series: Sequence[Series], *, unit: str = ""
) -> Markup:
    """One column per category, the series stacked in the order given (the first at the
    bottom), a legend, and a y axis of 3 to 5 nice ticks covering the highest total.

    Raises ValueError when a series does not have one value per category."""
    cats = [str(c) for c in categories]
    rows = [[_clean(v) for v in s.values] for s in series]
    for entry, row in zip(series, rows, strict=True):
        if len(row) != len(cats):
            raise ValueError(
                f"series {entry.name!r} has {len(row)} values for {len(cats)} categories"
            )
    totals = [sum(row[i] for row in rows) for i in range(len(cats))]
    cid = _chart_id("stacked", title, cats, [(s.name, list(s.values)) for s in series], unit)
    peak = max(totals, default=0.0)
    if peak <= 0:
        return _no_data("stacked", cid, title, STACKED_PLOT_H + 56)

    ticks = _nice_ticks(peak, integral=all(v.is_integer() for row in rows for v in row))
    scale_top = float(ticks[-1])
    legend, legend_h = _legend([s.name for s in series])
    top = legend_h + 12
    bottom = top + STACKED_PLOT_H
    height = bottom + 24
    left, right = _tick_margin(ticks), WIDTH - 8.0
    band = (right - left) / len(cats)
    bar_w = min(band * 0.7, MAX_BAR_W)

    columns = []
    for i, category in enumerate(cats):
        x = left + i * band + (band - bar_w) / 2
        parts = [_title(f"{category} · total: {_with_unit(totals[i], unit)}")]
        running = 0.0
        for index, (entry, row) in enumerate(zip(series, rows, strict=True)):
            y_low = bottom - running / scale_top * STACKED_PLOT_H
            running += row[i]
            y_high = bottom - running / scale_top * STACKED_PLOT_H
            cls = f"bar series-{index % PALETTE} bar-{_slug(entry.name)}"
            label = f"{category} · {entry.name}: {_with_unit(row[i], unit)}"
            geometry = {"x": x, "y": y_high, "width": bar_w, "height": y_low - y_high}
            parts.append(_tag("rect", {"class": cls, **geometry}, _title(label)))
        columns.append(_tag("g", {"class": "column"}, "".join(parts)))
    labels = _category_labels(cats, left, band, bottom + 16)

    busiest = totals.index(peak)
    names = ", ".join(s.name for s in series)
    desc = (
        f"Stacked bars of {len(series)} series ({names}) over {len(cats)} categories, "
        f"{cats[0]} to {cats[-1]}; the highest total is {_with_unit(peak, unit)} "
        f"({cats[busiest]})."
    )
    body = legend + _y_axis(ticks, left, right, top, bottom) + "".join(columns) + labels
    return _svg("stacked", cid, title, desc, height, body)


# --- horizontal bars --------------------------------------------------------------------------


def horizontal_bars(title: str, items: Sequence[tuple[str, float]], *, unit: str = "") -> Markup:
    """One bar per (label, value), in the order given, widths proportional to the values (the
    largest spans the plot); long labels are cut with "…", the full text is in the titles."""
    entries = [(str(label), _clean(value)) for label, value in items]
    cid = _chart_id("hbars", title, [(label, value) for label, value in items], unit)
    peak = max((value for _, value in entries), default=0.0)
    if peak <= 0:
        return _no_data("hbars", cid, title, 80)

    labels = [_truncate(label, ITEM_CHARS) for label, _ in entries]
    values = [_with_unit(value, unit) for _, value in entries]
    bar_x = 8 + max(len(label) for label in labels) * CHAR_W + 8
    room = max(len(value) for value in values) * CHAR_W + 12
    span = max(WIDTH - bar_x - room, 40.0)
    height = 8 + len(entries) * HBAR_ROW

    rows = []
    for i, ((label, value), short, shown) in enumerate(zip(entries, labels, values, strict=True)):
        row_y = 4 + i * HBAR_ROW
        width = value / peak * span
        full = f"{label}: {shown}"
        rect = _tag(
            "rect",
            {
                "class": "bar",
                "x": bar_x,
                "y": row_y + (HBAR_ROW - HBAR_THICKNESS) / 2,
                "width": width,
                "height": HBAR_THICKNESS,
            },
            _title(full),
        )
        text_y = row_y + HBAR_ROW / 2 + 4
        content = (
            _title(full)
            + _text(bar_x - 6, text_y, short, "item-label", "end")
            + rect
            + _text(bar_x + width + 6, text_y, shown, "value-label")
        )
        rows.append(_tag("g", {"class": "row"}, content))

    largest = max(range(len(entries)), key=lambda i: entries[i][1])
    desc = (
        f"Horizontal bars of {len(entries)} items; the largest is {entries[largest][0]} "
        f"with {values[largest]}."
    )
    return _svg("hbars", cid, title, desc, height, "".join(rows))


# --- line with limit --------------------------------------------------------------------------


def line_with_limit(
    title: str,
    categories: Sequence[str],
    values: Sequence[float],
    *,
    limit: float | None,
    unit: str = "",
) -> Markup:
    """A line over an area, one point per category, and a dashed horizontal line at `limit`
    (class "limit"); the y axis covers both the values and the limit. Points above the limit
    carry the class "over".

    Raises ValueError when there is not one value per category."""
    cats = [str(c) for c in categories]
    points = [_clean(v) for v in values]
    if len(points) != len(cats):
        raise ValueError(f"{len(points)} values for {len(cats)} categories")
    budget = None if limit is None or not math.isfinite(limit) else _clean(limit)
    cid = _chart_id("line", title, cats, list(values), limit, unit)
    peak = max([*points, budget or 0.0], default=0.0)
    if not cats or peak <= 0:
        return _no_data("line", cid, title, LINE_H)

    integral = all(v.is_integer() for v in points) and (budget is None or budget.is_integer())
    ticks = _nice_ticks(peak, integral=integral)
    scale_top = float(ticks[-1])
    top, bottom = 20.0, LINE_H - 24.0
    left, right = _tick_margin(ticks), WIDTH - 8.0
    band = (right - left) / len(cats)

    def y_of(value: float) -> float:
        return bottom - value / scale_top * (bottom - top)

    xy = [(left + (i + 0.5) * band, y_of(v)) for i, v in enumerate(points)]
    coords = " ".join(f"{_coord(x)},{_coord(y)}" for x, y in xy)
    first_x, last_x = _coord(xy[0][0]), _coord(xy[-1][0])
    base = _coord(bottom)
    area = _tag("path", {"class": "area", "d": f"M{first_x},{base} L{coords} L{last_x},{base} Z"})
    line = _tag("polyline", {"class": "line", "points": coords})
    dots = []
    for (x, y), category, value in zip(xy, cats, points, strict=True):
        over = budget is not None and value > budget
        dots.append(
            _tag(
                "circle",
                {"class": "point over" if over else "point", "cx": x, "cy": y, "r": 3},
                _title(f"{category}: {_with_unit(value, unit)}"),
            )
        )
    body = _y_axis(ticks, left, right, top, bottom) + area + line
    desc = (
        f"Line of {len(cats)} values, {cats[0]} to {cats[-1]}; the highest is "
        f"{_with_unit(max(points), unit)} ({cats[points.index(max(points))]})"
    )
    if budget is not None:
        shown = _with_unit(budget, unit)
        y = y_of(budget)
        body += _tag(
            "line",
            {"class": "limit", "x1": left, "x2": right, "y1": y, "y2": y},
            _title(f"limit: {shown}"),
        )
        body += _text(right, y - 4, f"limit {shown}", "limit-label", "end")
        above = sum(value > budget for value in points)
        desc += f"; the limit is {shown}, exceeded by {above} of {len(cats)}"
    body += "".join(dots)
    labels = _category_labels(cats, left, band, bottom + 16)
    return _svg("line", cid, title, desc + ".", LINE_H, body + labels)
