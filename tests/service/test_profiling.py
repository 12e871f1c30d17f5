"""service.profiling: a finished engine profile as the JSON that ``/v1/profile`` and ``"profile": true`` return."""

from __future__ import annotations

import json

import pytest

import engine
from engine import profiler
from engine.profiler import profile, record_function
from service.profiling import profile_call, summarize
from tests.engine.test_profiler import FakeDeviceClock, assert_well_formed_and_nested, nested_program, table_rows


def test_summary_is_plain_json_data_sorted_and_limited():
    with profile() as prof:
        nested_program()
    summary = json.loads(json.dumps(summarize(prof, 1.0, row_limit=4)))
    assert set(summary) == {"rows", "totals", "table", "trace"}
    assert len(summary["rows"]) == 4 and len(table_rows(summary["table"])) == 4
    selfs = [row["self_cpu_time_total_us"] for row in summary["rows"]]
    assert selfs == sorted(selfs, reverse=True)
    assert summary["totals"]["self_cpu_time_total_us"] == pytest.approx(prof.self_cpu_time_total)
    assert summary["totals"]["events"] == len(prof.events())
    assert_well_formed_and_nested(summary["trace"])


def test_rows_count_every_op_and_their_self_shares_make_the_whole():
    x = engine.ones(3, requires_grad=True)
    with profile() as prof:
        for _ in range(3):
            (x.sin() * 2).sum().backward()
    rows = summarize(prof, 1.0)["rows"]
    counts = {row["name"]: row["count"] for row in rows}
    assert counts["engine::sin"] == 3 and counts["engine::mul"] == 3 and counts["SinBackward0"] == 3
    assert sum(row["self_cpu_percent"] for row in rows) == pytest.approx(100.0)
    for row in rows:
        assert 0.0 <= row["self_cpu_time_total_us"] <= row["cpu_time_total_us"] + 1e-9, row
        assert row["cpu_time_avg_us"] == pytest.approx(row["cpu_time_total_us"] / row["count"]), row


def test_profile_call_returns_the_result_and_the_wall_time_of_the_work():
    def work():
        with record_function("work"):
            return (engine.ones(4) * 3).sum().item()

    result, summary = profile_call(work, record_shapes=True)
    assert result == 12.0
    totals = summary["totals"]
    assert 0.0 < totals["self_cpu_time_total_us"] <= totals["wall_time_us"]
    mul = next(event for event in summary["trace"]["traceEvents"] if event["name"] == "engine::mul")
    assert mul["args"]["Input Dims"] == [[4], []]


def test_device_totals_through_the_device_clock_seam(monkeypatch):
    monkeypatch.setattr(profiler.backend, "cuda_available", lambda: True)
    monkeypatch.setattr(profiler, "_DeviceClock", FakeDeviceClock)
    with profile(use_device="cuda") as prof, record_function("range"):
        engine.ones(2) * 2
    summary = summarize(prof, 1.0)
    # the fake device takes 5 us per event: the range's own 5 us plus the mul's 5 us
    assert summary["totals"]["self_cuda_time_total_us"] == pytest.approx(10.0)
    rows = {row["name"]: row for row in summary["rows"]}
    assert rows["range"]["device_time_total_us"] == pytest.approx(10.0)
    assert rows["range"]["self_device_time_total_us"] == pytest.approx(5.0)
