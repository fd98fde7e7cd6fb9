"""A few trials of bench/kill_harness.py: real retrain.py runs, SIGKILLed.

The full run (30 trials) is `python bench/kill_harness.py`; see README.
"""

import sys

import pytest

from bench import kill_harness


# One trial of each stage at a random moment, two killed inside a compaction
# of segments, and two whose damage is certain: a run killed while it writes
# its journal, the journal then torn inside a record; and a byte flipped
# inside the vectors of the largest segment, after a killed compaction.
PLAN = ['journal+tear', 'compaction', 'training', 'export', 'cache',
        'compaction+flip_chunk']


def test_killed_runs_leave_a_good_cache_and_model_and_recover(tmp_path):
  lines = []
  counts = kill_harness.run_trials(len(PLAN), str(tmp_path), seed=1,
                                   photos_per_trial=60, log=lines.append,
                                   plan=PLAN)
  report = '\n'.join(lines)
  assert counts['trials'] == len(PLAN), report
  assert counts['corrupted_caches'] == 0, report
  assert counts['lost_models'] == 0, report
  assert counts['failed_recoveries'] == 0, report
  # The journal trial was killed with vectors in its journal; both damages
  # changed what the files hold (the harness checks it), and each recovery
  # caught its damage: it set the HDF5 file aside, or kept the journal's
  # records before the tear and computed only the rest.
  assert counts['journal_kills'] == 1, report
  assert counts['compaction_kills'] == 2, report
  assert counts['damaged'] == 2, report
  assert counts['damage_detected'] == 2, report
  assert counts['killed'] >= 4, report  # A run may end before its moment.


if __name__ == '__main__':
  sys.exit(pytest.main([__file__]))
