"""A few trials of bench/kill_harness.py: real retrain.py runs, SIGKILLed.

The full run (30 trials) is `python bench/kill_harness.py`; see README.
"""

import sys

import pytest

from bench import kill_harness


def test_killed_runs_leave_a_good_cache_and_model_and_recover(tmp_path):
  lines = []
  counts = kill_harness.run_trials(5, str(tmp_path), seed=1,
                                   photos_per_trial=60, log=lines.append)
  report = '\n'.join(lines)
  assert counts['trials'] == 5, report
  assert counts['corrupted_caches'] == 0, report
  assert counts['lost_models'] == 0, report
  assert counts['failed_recoveries'] == 0, report
  assert counts['damaged'] == 1, report
  assert counts['damage_detected'] + counts['damage_harmless'] == 1, report
  assert counts['killed'] >= 3, report  # A run may end before its moment.


if __name__ == '__main__':
  sys.exit(pytest.main([__file__]))
