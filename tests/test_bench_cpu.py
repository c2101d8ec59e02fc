"""The bench's CPU accounting: what two workers spent against one, beside each speed-up."""

from __future__ import annotations

import math
import subprocess
import sys

from bench.common import _cpu, _speedups, cpu_seconds, cpu_spent

BUSY = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass"


def test_a_waited_child_process_is_counted() -> None:
    before = cpu_seconds()
    subprocess.run([sys.executable, "-c", BUSY], check=True, timeout=60)
    spent = cpu_spent(before, cpu_seconds())
    assert 0.3 <= spent < 5.0


def test_a_pool_worker_is_counted_from_zero_and_an_ended_one_voids_the_measure() -> None:
    assert cpu_spent((1.0, {}), (1.5, {7: 2.0})) == 2.5  # a worker forked during the measure
    assert cpu_spent((1.0, {7: 2.0}), (1.5, {7: 2.25})) == 0.75
    assert math.isnan(cpu_spent((1.0, {7: 2.0}), (9.0, {})))  # its CPU moved to the children's


def test_speed_ups_and_cpu_ratios_are_medians_of_the_rounds() -> None:
    runs = {"one_s": [10.0, 12.0, 11.0], "two_s": [5.0, 8.0, 5.5], "floor_s": [9.0, 9.0, 9.0]}
    assert _speedups(runs) == {"speedup": 2.0}  # rounds 2.0, 1.5, 2.0
    cpu = {"one_s": [10.0, 12.0, 11.0], "two_s": [10.5, math.nan, 13.2]}
    ratio = _speedups(cpu, "cpu_ratio", invert=True)["cpu_ratio"]  # rounds 1.05, 1.2
    assert math.isclose(ratio, 1.125)
    assert _cpu({"cpu_ratio": ratio}, "") == "; CPU time 1.12x one's"
    assert _cpu({"cpu_ratio": math.nan}, "") == "" and _cpu({}, "cli_") == ""
