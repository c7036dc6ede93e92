"""scripts/bench_overhead.py subclasses the Trainer to time it: a change to the Trainer must not
leave the bench broken or timing less than the whole run (it checks the two loops ran the same
steps). Speed itself is the bench's to measure, not a test's."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest
from _template_run import REPO, env_for_runs


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("interleave", ["log-point", "run"])
def test_the_overhead_bench_runs_and_reports_a_ratio(interleave):
    result = subprocess.run([sys.executable, "scripts/bench_overhead.py", "--threads", "1", "--data", "digits",
                             "--repeats", "2", "--epochs", "3", "--interleave", interleave],
                            cwd=REPO, env=env_for_runs(), capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr
    repeats = re.findall(r"repeat \d: raw +([\d.]+) ms/step +trainer +([\d.]+) ms/step .*\((\d+) steps\)", result.stdout)
    assert len(repeats) == 2, result.stdout
    assert all(float(raw) > 0 and float(trainer) > 0 and int(steps) == 3 * 20 for raw, trainer, steps in repeats)
    assert re.search(r"ratio Trainer/raw = \d+\.\d{3} \(median of the repeats", result.stdout), result.stdout
