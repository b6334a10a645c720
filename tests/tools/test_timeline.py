"""The timeline renderer draws a recorded trace (skipped without matplotlib)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("matplotlib")

from tools.trace import timeline
from tools.trace.timeline import find_window, render_timeline

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_renders_png_and_svg_of_a_recorded_trace(run: Any, tmp_path: Path) -> None:
    res = run("inband")
    png, svg = tmp_path / "t.png", tmp_path / "t.svg"
    render_timeline(res.timeline, [str(png), str(svg)], res.window, res.title)
    data = png.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 10_000
    root = ET.parse(svg).getroot()
    assert root.tag.endswith("svg")
    text = svg.read_text()
    assert "main loop [MainThread]" in text and "IO mon_iothread" in text
    assert "query-status (in-band)" in text


def test_command_line_window_around_a_request(run: Any, tmp_path: Path) -> None:
    res = run("oob")
    out = tmp_path / "oob.svg"
    assert timeline.main([res.trace_path, "-o", str(out), "--request", '"lock"', "--no-locks"]) == 0
    assert out.stat().st_size > 5_000
    lo, hi = find_window(res.timeline, "lock")
    assert 0 <= lo < hi <= res.timeline.end_ns + 10**6
    with pytest.raises(KeyError):
        find_window(res.timeline, "no such id")
