"""Orbax checkpoints of a sharded state and a grain iterator, on local disk and on a GCS emulator (orbax's
tensorstore through TENSORSTORE_GCS_HTTP_URL, its metadata through etils epath → gcsfs)."""

import grain
import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from audiopalm.checkpoints.input_state import merge_states
from audiopalm.checkpoints.manager import CheckpointConfig, Checkpointer
from audiopalm.files import storage


@pytest.fixture(params=["local", "gcs"])
def model_dir(request, tmp_path) -> str:
  return str(tmp_path / "run") if request.param == "local" else request.getfixturevalue("gcs_bucket") + "/run"


def _iterator():
  return iter(grain.MapDataset.range(100).shuffle(seed=1).to_iter_dataset())


def test_save_and_restore_state_and_data_position(model_dir):
  mesh = jax.make_mesh((jax.device_count(),), ("data",), axis_types=(jax.sharding.AxisType.Explicit,))
  sharding = NamedSharding(mesh, P("data"))
  state = {"w": jax.device_put(np.arange(32, dtype=np.float32).reshape(8, 4), sharding), "step": np.int32(7)}
  shardings = {"w": sharding, "step": NamedSharding(mesh, P())}
  data = _iterator()
  seen = [next(data) for _ in range(5)]
  checkpointer = Checkpointer(model_dir, CheckpointConfig(save_interval_steps=1, async_save=False))
  assert checkpointer.latest_step() is None
  assert checkpointer.save(7, state, data)
  checkpointer.wait()
  checkpointer.close()
  following = [next(data) for _ in range(3)]
  assert storage.isdir(storage.join(model_dir, "checkpoints", "7"))

  again = Checkpointer(model_dir, CheckpointConfig(save_interval_steps=1, async_save=False))
  assert again.latest_step() == 7
  fresh = _iterator()
  restored = again.restore(jax.eval_shape(lambda: state), shardings, fresh)
  np.testing.assert_array_equal(np.asarray(restored["w"]), np.asarray(state["w"]))
  assert restored["w"].sharding == sharding and int(restored["step"]) == 7
  assert [next(fresh) for _ in range(3)] == following and seen  # the data resumes where the save left it
  again.close()


def test_process_states_merge_into_one_global_state():
  parts = [{"input": {"seq_len": 8}, "streams": {"0": {"i": 3}, "1": {"i": 4}}},
           {"input": {"seq_len": 8}, "streams": {"2": {"i": 3}, "3": {"i": 5}}}]
  assert merge_states(parts) == {"input": {"seq_len": 8},
                                 "streams": {"0": {"i": 3}, "1": {"i": 4}, "2": {"i": 3}, "3": {"i": 5}}}
  assert merge_states([{"rows": 24}, {"rows": 24}]) == {"rows": 24}
  with pytest.raises(ValueError, match=r"disagree at input state\['rows'\]: 24 vs 32"):
    merge_states([{"rows": 24}, {"rows": 32}])


def test_a_restore_can_leave_the_input_where_it_is_and_drop_later_checkpoints(tmp_path):
  state = {"w": np.arange(4, dtype=np.float32)}
  checkpointer = Checkpointer(str(tmp_path), CheckpointConfig(save_interval_steps=1, async_save=False))
  data = _iterator()
  for step in (1, 2, 3):
    next(data)
    checkpointer.save(step, {"w": state["w"] * step}, data, loop_state={"rewinds": [step]})
  position = data.get_state()
  restored = checkpointer.restore(jax.eval_shape(lambda: state), {"w": None}, None, step=1)
  np.testing.assert_array_equal(np.asarray(restored["w"]), state["w"])
  assert checkpointer.loop_state == {"rewinds": [1]} and data.get_state() == position
  checkpointer.discard_after(1)
  assert checkpointer.all_steps() == [1]
  assert checkpointer.save(2, state, data)  # the rolled-back run saves its own step 2
  checkpointer.close()
