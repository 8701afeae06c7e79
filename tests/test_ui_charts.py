"""The dashboard's SVG charts (app/ui/charts.py): well-formed XML, geometry proportional to
the data, nice ticks, a limit line where the limit is, every value in a <title>, no inline
style, hostile text inert, empty data drawn as "no data"."""

from __future__ import annotations

import itertools
import math
import xml.etree.ElementTree as ET
from collections.abc import Callable
from decimal import Decimal

import pytest
from markupsafe import Markup

from app.ui.charts import Series, horizontal_bars, line_with_limit, stacked_bars

NS = "{http://www.w3.org/2000/svg}"
XSS = [
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(1)>',
    "'><svg onload=alert(1)>",
    "a & b </title><script>x</script>",
]
DAYS = ["2026-11-27", "2026-11-28", "2026-11-29"]


def parse(markup: Markup) -> ET.Element:
    assert isinstance(markup, Markup)
    root = ET.fromstring(str(markup))
    assert root.tag == f"{NS}svg"
    return root


def classes(element: ET.Element) -> set[str]:
    return set(element.get("class", "").split())


def with_class(root: ET.Element, tag: str, cls: str) -> list[ET.Element]:
    return [e for e in root.iter(f"{NS}{tag}") if cls in classes(e)]


def num(element: ET.Element, attr: str) -> float:
    value = element.get(attr)
    assert value is not None, f"{element.tag} has no {attr}"
    return float(value)


def title_of(element: ET.Element) -> str:
    title = element.find(f"{NS}title")
    assert title is not None, f"{element.tag} has no <title>"
    return title.text or ""


def titles(root: ET.Element) -> list[str]:
    return [t.text or "" for t in root.iter(f"{NS}title")]


def texts(root: ET.Element, cls: str) -> list[str]:
    return [e.text or "" for e in with_class(root, "text", cls)]


def tick_values(root: ET.Element) -> list[float]:
    return [float(t.replace(",", "")) for t in texts(root, "tick-label")]


def assert_clean(root: ET.Element) -> None:
    """No inline style anywhere, nothing executable."""
    for element in root.iter():
        assert "style" not in element.attrib
        assert element.tag not in {f"{NS}style", f"{NS}script", f"{NS}img", f"{NS}foreignObject"}
        assert not any(name.lower().startswith("on") for name in element.attrib)
        assert "href" not in element.attrib


def assert_frame(root: ET.Element, title: str) -> None:
    assert "chart" in classes(root)
    assert root.get("width") == "100%"
    assert root.get("role") == "img"
    assert root.get("preserveAspectRatio")
    view_box = (root.get("viewBox") or "").split()
    assert view_box[:3] == ["0", "0", "640"]
    assert float(view_box[3]) > 0
    first_title = root.find(f"{NS}title")
    desc = root.find(f"{NS}desc")
    assert first_title is not None
    assert desc is not None
    assert first_title.text == title
    assert desc.text
    ids = (root.get("aria-labelledby") or "").split()
    assert ids == [first_title.get("id"), desc.get("id")]
    assert_clean(root)


def stacked_fixture() -> Markup:
    return stacked_bars(
        "Jobs per day",
        DAYS,
        [
            Series("succeeded", [10, 42, 0]),
            Series("failed", [5, 3, 7]),
            Series("Running / queued", [1, 0, 2]),
        ],
    )


# --- stacked bars -----------------------------------------------------------------------------


def test_stacked_bars_frame_and_every_value_titled() -> None:
    root = parse(stacked_fixture())
    assert_frame(root, "Jobs per day")
    assert "chart-stacked" in classes(root)
    all_titles = titles(root)
    for day, (s, f, r) in zip(DAYS, [(10, 5, 1), (42, 3, 0), (0, 7, 2)], strict=True):
        assert f"{day} · succeeded: {s}" in all_titles
        assert f"{day} · failed: {f}" in all_titles
        assert f"{day} · Running / queued: {r}" in all_titles
        assert f"{day} · total: {s + f + r}" in all_titles


def test_stacked_bars_heights_proportional_and_stacked_in_order() -> None:
    root = parse(stacked_fixture())
    baseline = num(with_class(root, "line", "axis")[0], "y1")
    columns = with_class(root, "g", "column")
    assert len(columns) == 3
    values = [[10, 5, 1], [42, 3, 0], [0, 7, 2]]
    first = columns[0].findall(f"{NS}rect")[0]
    per_unit = num(first, "height") / 10
    assert per_unit > 0
    for column, column_values in zip(columns, values, strict=True):
        rects = column.findall(f"{NS}rect")
        assert [sorted(classes(r) - {"bar"}) for r in rects] == [
            ["bar-succeeded", "series-0"],
            ["bar-failed", "series-1"],
            ["bar-running-queued", "series-2"],
        ]
        assert len({num(r, "x") for r in rects}) == 1
        bottom = baseline  # the first series sits on the axis, each next one on the last
        for rect, value in zip(rects, column_values, strict=True):
            y, height = num(rect, "y"), num(rect, "height")
            assert height == pytest.approx(value * per_unit, abs=0.02)
            assert y + height == pytest.approx(bottom, abs=0.02)
            bottom = y
        total_height = sum(num(r, "height") for r in rects)
        assert total_height == pytest.approx(sum(column_values) * per_unit, abs=0.05)
        assert title_of(column) == f"{title_of(rects[0]).split(' · ')[0]} · total: " + str(
            sum(column_values)
        )


def test_stacked_bars_axis_ticks_are_nice_and_cover_the_max() -> None:
    root = parse(stacked_fixture())
    ticks = tick_values(root)
    assert 3 <= len(ticks) <= 5
    assert ticks[0] == 0
    assert ticks[-1] >= 45  # the highest total
    step = ticks[1]
    assert all(b - a == pytest.approx(step) for a, b in itertools.pairwise(ticks))
    assert is_nice(step)
    # the top tick's gridline sits at the top of the tallest column's scale
    grid = with_class(root, "line", "grid")
    axis = with_class(root, "line", "axis")[0]
    plot_height = num(axis, "y1") - num(grid[-1], "y1")
    tallest = with_class(root, "g", "column")[1].findall(f"{NS}rect")
    assert sum(num(r, "height") for r in tallest) == pytest.approx(
        45 / ticks[-1] * plot_height, abs=0.05
    )


def is_nice(step: float) -> bool:
    exponent = math.floor(math.log10(step))
    mantissa = Decimal(repr(step)).scaleb(-exponent).normalize()
    return mantissa in {Decimal(1), Decimal(2), Decimal("2.5"), Decimal(5)}


@pytest.mark.parametrize(
    "peak",
    [1, 2, 3, 4, 5, 7, 9, 10, 11, 45, 99, 100, 101, 0.3, 0.07, 1.5, 12.5, 999_999, 1e9 + 1, 1e20],
)
def test_ticks_are_nice_for_any_peak(peak: float) -> None:
    root = parse(horizontal_and_stacked_peak(peak))
    ticks = tick_values(root)
    assert 3 <= len(ticks) <= 5, ticks
    assert ticks[0] == 0
    assert ticks[-1] >= peak
    assert is_nice(ticks[1])
    # not wastefully tall: one step fewer would not cover the peak
    assert ticks[-2] < peak or len(ticks) == 3


def horizontal_and_stacked_peak(peak: float) -> Markup:
    return stacked_bars("t", ["a", "b"], [Series("s", [peak / 2, peak])])


def test_whole_number_data_gets_whole_number_ticks() -> None:
    root = parse(stacked_bars("t", ["a"], [Series("s", [1])]))
    assert tick_values(root) == [0, 1, 2]
    root = parse(stacked_bars("t", ["a"], [Series("s", [3])]))
    assert tick_values(root) == [0, 1, 2, 3]


def test_stacked_bars_legend_lists_every_series_with_its_class() -> None:
    root = parse(stacked_fixture())
    assert texts(root, "legend-label") == ["succeeded", "failed", "Running / queued"]
    swatches = with_class(root, "rect", "swatch")
    assert [sorted(classes(s) - {"swatch"}) for s in swatches] == [
        ["bar-succeeded", "series-0"],
        ["bar-failed", "series-1"],
        ["bar-running-queued", "series-2"],
    ]


def test_stacked_bars_many_categories_thin_out_labels() -> None:
    days = [f"2026-11-{d:02d}" for d in range(1, 31)]
    root = parse(stacked_bars("t", days, [Series("s", list(range(1, 31)))]))
    labels = texts(root, "category-label")
    assert 2 <= len(labels) < 30
    assert labels[0] == "2026-11-01"
    xs = [num(e, "x") for e in with_class(root, "text", "category-label")]
    assert min(b - a for a, b in itertools.pairwise(xs)) >= 10 * 6.5
    assert len(with_class(root, "g", "column")) == 30


def test_stacked_bars_reject_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="categories"):
        stacked_bars("t", ["a", "b"], [Series("s", [1])])


# --- horizontal bars --------------------------------------------------------------------------


def test_horizontal_bars_widths_proportional_in_given_order() -> None:
    items = [("timeout", 40.0), ("content policy", 10.0), ("upstream 500", 25.0), ("x", 0.0)]
    root = parse(horizontal_bars("Failure reasons", items, unit="jobs"))
    assert_frame(root, "Failure reasons")
    assert "chart-hbars" in classes(root)
    bars = with_class(root, "rect", "bar")
    assert [title_of(b) for b in bars] == [
        "timeout: 40 jobs",
        "content policy: 10 jobs",
        "upstream 500: 25 jobs",
        "x: 0 jobs",
    ]
    widths = [num(b, "width") for b in bars]
    assert widths[3] == 0
    for width, (_, value) in zip(widths[:3], items[:3], strict=True):
        assert width / value == pytest.approx(widths[0] / 40, rel=0.001)
    assert len({num(b, "x") for b in bars}) == 1
    ys = [num(b, "y") for b in bars]
    assert ys == sorted(ys)
    assert len({num(b, "height") for b in bars}) == 1
    assert texts(root, "value-label") == ["40 jobs", "10 jobs", "25 jobs", "0 jobs"]
    assert texts(root, "item-label") == ["timeout", "content policy", "upstream 500", "x"]


def test_horizontal_bars_truncate_long_labels_but_title_has_it_all() -> None:
    reason = "the provider rejected the prompt because it mentioned something long"
    root = parse(horizontal_bars("t", [(reason, 3)]))
    [label] = texts(root, "item-label")
    assert label.endswith("…")
    assert len(label) < len(reason)
    assert reason.startswith(label[:-1])
    [bar] = with_class(root, "rect", "bar")
    assert title_of(bar) == f"{reason}: 3"


# --- line with limit --------------------------------------------------------------------------


def test_line_with_limit_places_the_limit_on_the_scale() -> None:
    values = [120.0, 480.5, 300.0, 0.0]
    root = parse(line_with_limit("Credits per day", [*DAYS, "2026-11-30"], values, limit=400))
    assert_frame(root, "Credits per day")
    assert "chart-line" in classes(root)
    ticks = tick_values(root)
    assert ticks[0] == 0
    assert ticks[-1] >= 480.5
    assert is_nice(ticks[1])
    axis = with_class(root, "line", "axis")[0]
    top_grid = with_class(root, "line", "grid")[-1]
    bottom, top = num(axis, "y1"), num(top_grid, "y1")

    def y_of(value: float) -> float:
        return bottom - value / ticks[-1] * (bottom - top)

    [limit] = with_class(root, "line", "limit")
    assert num(limit, "y1") == pytest.approx(y_of(400), abs=0.01)
    assert num(limit, "y2") == num(limit, "y1")
    assert title_of(limit) == "limit: 400"
    assert texts(root, "limit-label") == ["limit 400"]

    points = with_class(root, "circle", "point")
    assert [title_of(p) for p in points] == [
        "2026-11-27: 120",
        "2026-11-28: 480.5",
        "2026-11-29: 300",
        "2026-11-30: 0",
    ]
    for point, value in zip(points, values, strict=True):
        assert num(point, "cy") == pytest.approx(y_of(value), abs=0.01)
    assert ["over" in classes(p) for p in points] == [False, True, False, False]
    xs = [num(p, "cx") for p in points]
    assert xs == sorted(xs)
    [line] = with_class(root, "polyline", "line")
    assert (line.get("points") or "").split() == [f"{p.get('cx')},{p.get('cy')}" for p in points]
    assert with_class(root, "path", "area")


def test_line_range_covers_a_limit_above_every_value() -> None:
    root = parse(line_with_limit("t", ["a", "b"], [10, 20], limit=1000, unit="credits"))
    ticks = tick_values(root)
    assert ticks[-1] >= 1000
    assert 3 <= len(ticks) <= 5
    [limit] = with_class(root, "line", "limit")
    top_grid = with_class(root, "line", "grid")[-1]
    if ticks[-1] == 1000:
        assert num(limit, "y1") == pytest.approx(num(top_grid, "y1"))
    assert title_of(limit) == "limit: 1,000 credits"
    assert "a: 10 credits" in titles(root)


def test_line_without_limit_draws_no_limit_line() -> None:
    for limit in (None, math.nan, math.inf):
        root = parse(line_with_limit("t", ["a", "b"], [1, 2], limit=limit))
        assert with_class(root, "line", "limit") == []
        assert len(with_class(root, "circle", "point")) == 2


def test_line_with_one_point() -> None:
    root = parse(line_with_limit("t", ["only"], [5], limit=3))
    [point] = with_class(root, "circle", "point")
    assert title_of(point) == "only: 5"
    assert "over" in classes(point)


def test_line_rejects_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="categories"):
        line_with_limit("t", ["a"], [1, 2], limit=None)


# --- values ------------------------------------------------------------------------------------


def test_bad_values_clamp_to_zero() -> None:
    root = parse(
        stacked_bars(
            "t",
            ["a", "b", "c", "d"],
            [Series("s", [-5, math.nan, math.inf, 4]), Series("t", [-math.inf, 1, 0, 0])],
        )
    )
    assert_clean(root)
    all_titles = titles(root)
    assert "a · s: 0" in all_titles
    assert "b · s: 0" in all_titles
    assert "c · s: 0" in all_titles
    assert "a · t: 0" in all_titles
    assert "d · total: 4" in all_titles
    heights = [num(r, "height") for r in with_class(root, "rect", "bar")]
    assert all(h >= 0 and math.isfinite(h) for h in heights)
    assert tick_values(root)[-1] >= 4

    root = parse(line_with_limit("t", ["a", "b"], [-3, math.nan], limit=-1))
    assert_clean(root)  # a limit of 0 against all-zero values: nothing to plot
    assert texts(root, "no-data") == ["no data"]


def test_large_numbers_get_thousands_separators() -> None:
    root = parse(horizontal_bars("t", [("big", 1_234_567_890), ("small", 1.5)], unit="credits"))
    assert "big: 1,234,567,890 credits" in titles(root)
    assert "small: 1.5 credits" in titles(root)
    assert texts(root, "value-label")[0] == "1,234,567,890 credits"

    root = parse(stacked_bars("t", ["a"], [Series("s", [12_345_678])]))
    assert "a · s: 12,345,678" in titles(root)
    labels = texts(root, "tick-label")
    assert labels[-1].replace(",", "").isdigit()
    assert "," in labels[-1]

    root = parse(line_with_limit("t", ["a"], [1e20], limit=None))
    assert "a: 100,000,000,000,000,000,000" in titles(root)
    assert "e" not in "".join(texts(root, "tick-label")).lower()


def test_fractions_show_without_float_noise() -> None:
    root = parse(line_with_limit("t", ["a", "b"], [0.1 + 0.2, 2 / 3], limit=0.5))
    assert {"a: 0.3", "b: 0.666667", "limit: 0.5"} <= set(titles(root))
    assert all(len(label) <= 5 for label in texts(root, "tick-label"))


# --- empty data -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "markup",
    [
        pytest.param(lambda: stacked_bars("Jobs", [], []), id="stacked-empty"),
        pytest.param(lambda: stacked_bars("Jobs", ["a", "b"], []), id="stacked-no-series"),
        pytest.param(lambda: stacked_bars("Jobs", [], [Series("s", [])]), id="stacked-no-days"),
        pytest.param(
            lambda: stacked_bars("Jobs", ["a", "b"], [Series("s", [0, 0]), Series("t", [0, 0])]),
            id="stacked-zeros",
        ),
        pytest.param(lambda: horizontal_bars("Jobs", []), id="hbars-empty"),
        pytest.param(lambda: horizontal_bars("Jobs", [("a", 0), ("b", 0)]), id="hbars-zeros"),
        pytest.param(lambda: line_with_limit("Jobs", [], [], limit=None), id="line-empty"),
        pytest.param(lambda: line_with_limit("Jobs", [], [], limit=100), id="line-empty-limit"),
        pytest.param(lambda: line_with_limit("Jobs", ["a"], [0], limit=None), id="line-zeros"),
    ],
)
def test_no_data(markup: Callable[[], Markup]) -> None:
    root = parse(markup())
    assert_frame(root, "Jobs")
    assert texts(root, "no-data") == ["no data"]
    assert with_class(root, "rect", "bar") == []
    assert list(root.iter(f"{NS}circle")) == []


def test_all_zero_values_under_a_limit_still_plot() -> None:
    root = parse(line_with_limit("t", ["a", "b"], [0, 0], limit=50))
    assert texts(root, "no-data") == []
    assert len(with_class(root, "line", "limit")) == 1
    assert [title_of(p) for p in with_class(root, "circle", "point")] == ["a: 0", "b: 0"]


# --- hostile text ---------------------------------------------------------------------------


@pytest.mark.parametrize("evil", XSS)
def test_hostile_text_is_inert(evil: str) -> None:
    charts = [
        stacked_bars(evil, [evil, "b"], [Series(evil, [1, 2]), Series("ok", [3, 4])], unit=evil),
        horizontal_bars(evil, [(evil, 3), ("ok", 1)], unit=evil),
        line_with_limit(evil, [evil, "b"], [1, 2], limit=1, unit=evil),
    ]
    for markup in charts:
        raw = str(markup)
        for needle in ("<script", "<img", "<svg onload", "</title><script"):
            assert needle not in raw
        root = parse(markup)
        assert_clean(root)
        first_title = root.find(f"{NS}title")
        assert first_title is not None
        assert first_title.text == evil  # escaped on the way in, intact once parsed
        assert any(evil in t for t in titles(root)[1:])
        for element in root.iter():
            for value in element.attrib.values():
                assert "<" not in value
                assert ">" not in value
            assert set(element.get("class", "")) <= set("abcdefghijklmnopqrstuvwxyz0123456789- ")


def test_series_names_become_safe_class_suffixes() -> None:
    names = ["Succeeded", "in progress", "<b>", "", "ÉCHEC", "--x--"]
    root = parse(stacked_bars("t", ["a"], [Series(n, [1]) for n in names]))
    suffixes = [
        next(c for c in classes(r) if c.startswith("bar-")) for r in with_class(root, "rect", "bar")
    ]
    assert suffixes == [
        "bar-succeeded",
        "bar-in-progress",
        "bar-b",
        "bar-series",
        "bar-chec",
        "bar-x",
    ]


def test_output_is_deterministic_and_ids_differ_between_charts() -> None:
    first, again = stacked_fixture(), stacked_fixture()
    assert first == again
    other = parse(stacked_bars("Other", DAYS, [Series("s", [1, 2, 3])]))
    assert parse(first).get("aria-labelledby") != other.get("aria-labelledby")
