"""Goodput accounting: categories, restarts' redone steps, records across invocations."""

import dataclasses
import json
import time

import pytest

from audiopalm.training.goodput import CATEGORIES, Goodput, InvocationRecord, summarize


def _record(start_step, last_step, steps_s, started=0.0, wall=100.0, redone=0, steps_run=None):
  seconds = {c: 0.0 for c in CATEGORIES}
  seconds.update(startup=10.0, compilation=5.0, steps=steps_s)
  return InvocationRecord(started=started, updated=started + wall, start_step=start_step, last_step=last_step,
                          furthest_step=last_step, seconds=seconds, redone_steps=redone,
                          steps_run=last_step - start_step - 1 if steps_run is None else steps_run)


def test_redone_steps_move_from_steps_to_redone():
  # Invocation 1: steps 0 → 21 (20 timed steps after the first, 1 s each); killed. Invocation 2 restored step 10
  # and redid steps 11 → 21 before new work (step 11, its first, counts as compilation; 10 timed steps redone).
  first = _record(0, 21, 20.0)
  second = _record(10, 40, 29.0, started=200.0, redone=10)
  summary = summarize([first, second])
  assert summary["redone_steps"] == 10 and summary["invocations"] == 2 and summary["steps"] == 40
  assert summary["seconds"]["redone"] == pytest.approx(10.0)
  assert summary["seconds"]["steps"] == pytest.approx(20.0 + 29.0 - 10.0)
  assert summary["goodput"] == pytest.approx(39.0 / 200.0)


def test_rewinds_never_make_goodput_negative():
  # 0 → 100 with two rewinds back to step 1: 298 timed steps of 1 s, 198 of them redone.
  record = _record(0, 100, 298.0, wall=320.0, redone=198, steps_run=298)
  summary = summarize([record])
  assert summary["seconds"]["redone"] == pytest.approx(198.0) and summary["goodput"] == pytest.approx(100 / 320)


def test_a_restart_counts_the_steps_an_earlier_invocation_had_reached(tmp_path):
  directory = tmp_path / "goodput"
  directory.mkdir()
  (directory / "20261207T000000-1.json").write_text(json.dumps(dataclasses.asdict(_record(0, 21, 20.0))))
  (directory / "20261207T000001-2.json").write_text("{cut by a crash")  # ignored with a warning
  clock = Goodput(str(tmp_path), start_step=10, started=time.time() - 1.0)
  assert clock.record.seconds["startup"] >= 1.0
  with clock.timed("data"):
    time.sleep(0.01)
  clock.first_step_done(11)
  for step in range(12, 25):
    clock.step_done(step)
  clock.rewound(3)  # a loss-spike rewind: 3 more steps to take again
  for step in range(22, 26):
    clock.step_done(step)
  summary = clock.finish()
  # Steps 12-21 were reached before (11, the first, is compilation), then 3 after the rewind.
  assert clock.record.redone_steps == 10 + 3 and clock.record.furthest_step == 25
  assert summary["invocations"] == 2 and summary["redone_steps"] == 13
  assert clock.record.seconds["data"] >= 0.01 and all(v >= 0 for v in clock.record.seconds.values())
  assert json.loads((directory / "summary.json").read_text()) == summary
  assert sorted(p.name for p in directory.iterdir())[-1] == "summary.json"


def test_a_disabled_clock_writes_nothing(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  clock = Goodput.disabled()
  clock.first_step_done(1)
  clock.finish()
  assert not list(tmp_path.iterdir())
