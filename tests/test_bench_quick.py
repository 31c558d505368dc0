"""The benchmark still runs, and its quick mode loses, duplicates and misorders nothing.

Timings are never asserted here (the machine is shared); only the correctness counts are.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.load import Tracker, now
from bench.stats import percentile, summarize_ms
from tests.proc import ROOT


def test_percentile_is_nearest_rank_when_values_are_sorted():
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([], 50) is None
    assert summarize_ms([0.001, 0.002])["max_ms"] == 2.0


def test_tracker_counts_a_duplicate_when_the_same_message_arrives_twice():
    tracker = Tracker()
    tracker.sent("a", 0, now())
    tracker.sent("b", 0, now())
    tracker.received("a")
    tracker.received("a")
    tracker.received("unknown")
    totals = tracker.totals()
    assert totals == {
        "sent": 2,
        "delivered": 1,
        "refused": 0,
        "not_delivered": 1,
        "delivered_twice": 1,
    }
    assert len(tracker.latencies[0]) == 1


def test_tracker_counts_no_duplicate_when_two_receivers_get_the_same_message():
    # A customer's line reaches the agent it was offered to and, after that offer expired, the
    # next agent through the transcript: two receivers, each once.
    tracker = Tracker()
    tracker.sent("a", 0, now())
    tracker.received("a", "agent1")
    tracker.received("a", "agent2")
    assert tracker.totals()["delivered_twice"] == 0
    tracker.received("a", "agent2")
    assert tracker.totals()["delivered_twice"] == 1
    assert len(tracker.latencies[0]) == 1


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_quick_bench_loses_and_duplicates_nothing_when_run_end_to_end(tmp_path):
    """The quick mode, a little smaller still (2 CPU cores in CI, shared with the servers): both
    floors and the real stack (daphne, Celery worker and beat) on real PostgreSQL and Redis."""
    out = tmp_path / "results.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.run",
            "--quick",
            "--agents",
            "12",
            "--active",
            "24",
            "--waiting",
            "6",
            "--steps",
            "8:5,16:5",
            "--plots-dir",
            str(tmp_path),
            "--out",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert out.exists(), done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads(out.read_text())
    for floor in ("floor_websockets", "floor_channels"):
        totals = results[floor]["totals"]
        assert totals["sent"] > 0
        assert totals["not_delivered"] == 0, totals
        assert totals["delivered_twice"] == 0, totals
    system = results["system"]
    checked = system["correctness"]
    assert checked["messages_sent"] > 0
    assert checked["lost"] == 0, checked
    assert checked["duplicated"] == 0, checked
    assert checked["seq_gaps"] == 0, checked
    assert checked["refused_but_stored"] == 0, checked
    assert checked["fairness_exit"] == 0, checked["fairness_output"]
    assert system["matching"]["offers"] > 0
    # The report: the table of figures against the targets, and both plots.
    summary = (Path(results["run_dir"]) / "summary.md").read_text()
    assert "| messages lost | 0 | 0 | met |" in summary
    assert "| verify_fairness | exit 0 | exit 0 | met |" in summary
    assert (tmp_path / "bench-latency-distribution.png").stat().st_size > 0
    assert (tmp_path / "bench-latency-vs-load.png").stat().st_size > 0
    assert done.returncode == 0, done.stdout[-3000:]
