"""The HTTP benchmark's reading of wrk's report (bench/bench_http.py)."""

from __future__ import annotations

import pytest

from bench import bench_http

REPORT = """Running 2s test @ http://127.0.0.1:8000/v1/grad
  1 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     7.60ms    1.07ms  26.56ms   92.99%
    Req/Sec     1.06k    46.00     1.14k    50.00%
  Latency Distribution
     50%    7.58ms
     75%    7.89ms
     90%    8.18ms
     99%   10.07ms
  2107 requests in 2.00s, 1.68MB read
  Non-2xx or 3xx responses: 3
Requests/sec:   1052.02
"""


def test_percentiles_come_from_the_distribution_lines(monkeypatch):
    class Done:
        stdout = REPORT

    monkeypatch.setattr(bench_http.subprocess, "run", lambda *args, **kwargs: Done())
    result = bench_http.load_with_wrk("http://127.0.0.1:8000/v1/grad", b"{}")
    assert result["p50"] == pytest.approx(7.58e-3) and result["p99"] == pytest.approx(10.07e-3)
    assert result["rps"] == pytest.approx(1052.02) and result["errors"] == 3


@pytest.mark.parametrize("text, seconds", [("250.00us", 250e-6), ("7.58ms", 7.58e-3), ("1.50s", 1.5), ("1.00m", 60.0)])
def test_durations_in_every_wrk_unit(text, seconds):
    assert bench_http._seconds(text) == pytest.approx(seconds)
