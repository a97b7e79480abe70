"""The SVG and the HTML page: a bar per phase on the time axis, the downtime band, escaping."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from migrator import timeline
from migrator.timeline.svg import FAILED_RED
from tests.migrator.timeline.samples import NOW, SAMPLES, build, succeeded

SVG = "{http://www.w3.org/2000/svg}"


def parse(document: str) -> ET.Element:
    return ET.fromstring(document.encode())


@pytest.mark.parametrize("name", SAMPLES)
def test_svg_is_a_standalone_chart(name: str) -> None:
    tl = build(name)
    root = parse(timeline.render_svg(tl))
    assert root.tag == f"{SVG}svg"
    width, height = int(root.get("width", "0")), int(root.get("height", "0"))
    assert width == timeline.DEFAULT_SVG_WIDTH and height > 100 and root.get("viewBox") == f"0 0 {width} {height}"
    phases = [g for g in root.iter(f"{SVG}g") if (g.get("class") or "").startswith("phase")]
    assert len(phases) == len(tl.bars)
    for bar, group in zip(tl.bars, phases, strict=True):
        assert len(group.findall(f"{SVG}rect")) == 1
        texts = [t.text for t in group.iter(f"{SVG}text")]
        assert bar.name in texts and timeline.bar_duration_text(bar) in texts
        fill = group.find(f"{SVG}rect").get("fill")  # type: ignore[union-attr]
        assert (fill == FAILED_RED) == bool(bar.error), (bar.name, fill)
    band = [r for r in root.iter(f"{SVG}rect") if r.get("class") == "downtime-band"]
    assert len(band) == (1 if tl.downtime else 0)
    words = " ".join(t.text or "" for t in root.iter(f"{SVG}text")) + " ".join(s.text or "" for s in root.iter(f"{SVG}tspan"))
    assert f"{tl.namespace}/{tl.name}" in words and "0s" in words
    assert f"trace {tl.trace_id}" in words
    if tl.downtime:
        assert f"downtime {timeline.downtime_text(tl)}" in words


def test_svg_bars_sit_on_the_time_axis() -> None:
    tl = build("succeeded")
    root = parse(timeline.render_svg(tl, width=1200))
    assert root.get("width") == "1200"
    rects = [g.find(f"{SVG}rect") for g in root.iter(f"{SVG}g") if (g.get("class") or "").startswith("phase")]
    xs = [(float(r.get("x", "0")), float(r.get("width", "0"))) for r in rects if r is not None]
    scale = (xs[-1][0] + xs[-1][1] - xs[0][0]) / tl.total
    for (x, w), bar in zip(xs, tl.bars, strict=True):
        assert x == pytest.approx(xs[0][0] + bar.start * scale, abs=0.2)
        assert w == pytest.approx(max(bar.duration * scale, 2.0), abs=0.2)
    band = next(r for r in root.iter(f"{SVG}rect") if r.get("class") == "downtime-band")
    assert float(band.get("x", "0")) == pytest.approx(xs[2][0], abs=0.2), "the band starts with the checkpoint (the freeze)"
    words = [t.text for t in root.iter(f"{SVG}text")]
    assert "frozen" in words and "ready" in words
    assert any("web: archive 47.0MiB, image 47.0MiB" in (w or "") for w in words)


def test_svg_escapes_what_it_is_given() -> None:
    obj = succeeded()
    obj["status"]["phases"][1]["error"] = 'kubelet said <script>alert("x")</script> & \x01left'
    obj["metadata"]["name"] = "web-<&>"
    root = parse(timeline.render_svg(timeline.build(obj, now=NOW)))
    texts = " ".join(t.text or "" for t in root.iter(f"{SVG}text"))
    assert '<script>alert("x")</script> &' in texts and "\x01" not in texts


def test_html_wraps_the_svg() -> None:
    page = timeline.render_html(build("failed"))
    assert page.startswith("<!DOCTYPE html>") and "<title>timeline of shop/db-q9w8e</title>" in page
    svg = page[page.index("<svg") : page.index("</svg>") + len("</svg>")]
    assert parse(svg).tag == f"{SVG}svg" and "<?xml" not in page


def test_svg_draws_each_stage_as_a_thin_bar_on_the_phases_axis() -> None:
    tl = build("staged")
    root = parse(timeline.render_svg(tl, width=1200))
    groups = [g for g in root.iter(f"{SVG}g") if g.get("class") == "stage"]
    assert len(groups) == len(tl.stages) == 11
    phases = [g.find(f"{SVG}rect") for g in root.iter(f"{SVG}g") if (g.get("class") or "").startswith("phase")]
    x0, scale = float(phases[0].get("x", "0")), float(phases[1].get("width", "0")) / tl.bars[1].duration  # type: ignore[union-attr]
    for stage, group in zip(tl.stages, groups, strict=True):
        (rect,) = group.findall(f"{SVG}rect")
        assert float(rect.get("x", "0")) == pytest.approx(x0 + stage.start * scale, abs=0.2)
        assert float(rect.get("width", "0")) == pytest.approx(max(stage.duration * scale, 2.0), abs=0.2)
        assert float(rect.get("height", "0")) < float(phases[0].get("height", "0"))  # type: ignore[union-attr]
        texts = [t.text for t in group.iter(f"{SVG}text")]
        assert texts[0] == timeline.stage_label(tl, stage) and texts[1] == timeline.stage_duration_text(stage)
        assert group.findtext(f"{SVG}title") == timeline.stage_tooltip(stage)
    assert groups[3].findtext(f"{SVG}title") == "checkpoint / upload of web: 500ms, 47.0MiB from +1.8s on node-1 (agent)"
    # Under their phase: the checkpoint's stages between its row and remove-source's.
    rows = {g.findtext(f"{SVG}text"): float(g.find(f"{SVG}rect").get("y", "0")) for g in root.iter(f"{SVG}g")  # type: ignore[union-attr]
            if (g.get("class") or "") in ("phase", "stage")}  # fmt: skip
    assert rows["checkpoint"] < rows["freeze"] < rows["upload (sidecar)"] < rows["remove-source"]
    assert rows["restore"] < rows["fetch (sidecar)"] < rows["ready (web)"] < rows["cleanup"]


def test_svg_of_a_migration_without_stages_is_as_before() -> None:
    for name in ("succeeded", "failed", "running", "refused"):
        root = parse(timeline.render_svg(build(name)))
        assert not [g for g in root.iter(f"{SVG}g") if g.get("class") == "stage" or g.get("id") == "stages"]
    obj = succeeded()
    obj["status"]["stages"] = []
    assert timeline.render_svg(timeline.build(obj, now=NOW)) == timeline.render_svg(build("succeeded"))


def test_svg_escapes_stage_strings() -> None:
    obj = SAMPLES["staged"]()
    obj["status"]["stages"][1]["container"] = '<img src=x onerror="alert(1)">&\x07'
    root = parse(timeline.render_svg(timeline.build(obj, now=NOW)))
    texts = " ".join(t.text or "" for t in root.iter(f"{SVG}text"))
    assert "<img" in texts and "\x07" not in texts
