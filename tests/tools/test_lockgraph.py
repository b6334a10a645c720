"""The lock-order graph: observed edges of real runs, verdicts, text and dot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tools.trace import lockgraph
from tools.trace.lockgraph import format_dot, format_text, graph_from_lockdep, graph_from_records
from util.main_loop import MainLoop
from util.thread import QemuMutex
from util.trace import TraceRecord
from util.trace_output import write_record_file

EXPECTED = {
    ("BQL", "monitor_lock"),  # the dispatcher pops under monitor_lock, holding the BQL
    ("monitor_lock", "qmp_queue_lock"),  # ...and takes each monitor's queue lock inside it
    ("mon_lock", "chr_write_lock"),  # monitor_puts writes the chardev under mon_lock
    ("BQL", "mon_lock"),  # in-band replies are written under the BQL
}


def test_observed_edges_of_a_known_scenario(run: Any) -> None:
    records = run("inband").records
    g = graph_from_records(records)
    assert EXPECTED <= set(g.edges)
    assert g.problems() == []
    assert all(g.status(g.edges[e]) == "ok" for e in EXPECTED)
    # the I/O thread writes OOB replies: mon_lock -> chr_write_lock there too
    oob = graph_from_records(run("oob").records)
    assert "IO mon_iothread" in oob.edges[("mon_lock", "chr_write_lock")].threads
    assert not any(e.outer == "BQL" and "IO mon_iothread" in e.threads for e in oob.edges.values())


def test_text_and_dot_show_hierarchy_and_edges(run: Any) -> None:
    g = graph_from_records(run("inband").records)
    text = format_text(g)
    assert text.splitlines()[1].split() == ["1", "BQL"]
    assert "monitor_lock -> qmp_queue_lock: ok" in text
    assert text.rstrip().endswith("no violation observed")
    dot = format_dot(g)
    assert dot.startswith("digraph lock_order {") and dot.rstrip().endswith("}")
    assert '"BQL" -> "monitor_lock" [label="x' in dot
    assert "{ rank=same;" in dot and '"qmp_queue_lock"' in dot and "#d62828" not in dot


def _locked(thread: str, tid: int, ts: int, mutex: str) -> TraceRecord:
    return TraceRecord(
        "qemu_mutex_locked", thread, tid, ts, {"mutex": mutex, "file": "x.py", "line": ts}
    )


def _unlock(thread: str, tid: int, ts: int, mutex: str) -> TraceRecord:
    return TraceRecord("qemu_mutex_unlock", thread, tid, ts, {"mutex": mutex})


def violating_records() -> list[TraceRecord]:
    """mon_lock then monitor_lock (a rank violation), and two unranked locks
    taken in both orders by two threads (an inversion)."""
    return [
        _locked("A", 1, 1, "monitor_lock"),
        _locked("A", 1, 2, "mon_lock"),
        _unlock("A", 1, 3, "mon_lock"),
        _unlock("A", 1, 4, "monitor_lock"),
        _locked("A", 1, 5, "mon_lock"),
        _locked("A", 1, 6, "monitor_lock"),
        _unlock("A", 1, 7, "monitor_lock"),
        _unlock("A", 1, 8, "mon_lock"),
        _locked("A", 1, 10, "x_lock"),
        _locked("A", 1, 11, "y_lock"),
        _unlock("A", 1, 12, "y_lock"),
        _unlock("A", 1, 13, "x_lock"),
        _locked("B", 2, 14, "y_lock"),
        _locked("B", 2, 15, "x_lock"),
        _unlock("B", 2, 16, "x_lock"),
        _unlock("B", 2, 17, "y_lock"),
    ]


def test_violations_and_inversions_are_highlighted() -> None:
    g = graph_from_records(violating_records())
    verdicts = {(e.outer, e.inner): g.status(e) for e in g.edges.values()}
    assert verdicts[("mon_lock", "monitor_lock")] == "VIOLATION"
    assert verdicts[("monitor_lock", "mon_lock")] == "INVERSION"
    assert verdicts[("x_lock", "y_lock")] == verdicts[("y_lock", "x_lock")] == "INVERSION"
    text = format_text(g)
    assert ">>mon_lock -> monitor_lock: VIOLATION" in text
    assert "4 violation(s)/inversion(s)" in text
    dot = format_dot(g)
    (line,) = [
        ln for ln in dot.splitlines() if ln.strip().startswith('"mon_lock" -> "monitor_lock"')
    ]
    assert "#d62828" in line and "VIOLATION" in line and "penwidth" in line


def test_command_line_exit_status(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.jsonl"
    write_record_file(violating_records(), str(bad))
    dot = tmp_path / "g.dot"
    assert lockgraph.main([str(bad), "--dot", str(dot)]) == 1
    assert "VIOLATION" in capsys.readouterr().out and dot.read_text().startswith("digraph")
    good = tmp_path / "good.jsonl"
    write_record_file(violating_records()[:4], str(good))
    assert lockgraph.main([str(good)]) == 0


def test_graph_from_lockdep_in_process(main_loop: MainLoop) -> None:
    """util.lockdep's own observed edges (the fixture's thread holds the BQL)."""
    m = QemuMutex("monitor_lock")
    with m:
        pass
    g = graph_from_lockdep()
    assert ("BQL", "monitor_lock") in g.edges
    assert g.status(g.edges[("BQL", "monitor_lock")]) == "ok"


def test_graph_picture_without_graphviz(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "g.png"
    lockgraph.render_graph(graph_from_records(violating_records()), [str(out)], graphviz=False)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
