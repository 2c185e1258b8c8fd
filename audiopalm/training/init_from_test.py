"""Continued pretraining: starting a run from an export or from another run (params, optimizer state), vocabulary
extension on the way, refusals, and per-group learning rates (frozen text rows)."""

import dataclasses
import json

import grain
import jax
import numpy as np
import optax
import pytest

from audiopalm.checkpoints.export import load_exported_params
from audiopalm.checkpoints.manager import CheckpointConfig
from audiopalm.data.text_source import TextSourceConfig
from audiopalm.main.presets import model_preset
from audiopalm.main.train import train
from audiopalm.model import Transformer
from audiopalm.model.params import abstract_params
from audiopalm.sharding.mesh import MeshConfig, make_mesh
from audiopalm.sharding.rules import ShardingRules
from audiopalm.training.init_from import InitFromConfig, initial_state
from audiopalm.training.optimizer import OptimizerConfig, make_optimizer
from audiopalm.training.param_groups import ParamGroupsConfig, lr_scales
from audiopalm.training.train_step import optimizer_count
from audiopalm.training.trainer import TrainerConfig
from audiopalm.vocab.combined import load_text_vocab
from audiopalm.vocab.spec import load_spec, make_spec

TEXT = load_text_vocab("byte").spec
TEXT_SPEC = make_spec(TEXT)  # 384 rows
SPEECH_SPEC = make_spec(TEXT, semantic=(256, "sem"))  # 514 → 640 rows
SMALL = model_preset("tiny", num_layers=1, d_model=32, d_ff=64, head_dim=8, tie_embeddings=False)
# Linear warmup over 10 steps: the learning rate tells which optimizer step a run is at.
ADAMW = OptimizerConfig(name="adamw", peak_lr=1e-2, warmup_steps=10, warmup="linear", schedule="constant")
MESH = MeshConfig(ici={"data": 2, "fsdp": 2, "tensor": 2})


@dataclasses.dataclass(frozen=True)
class SpecSource:
  """Random tokens over [low, high) of a combined vocabulary `vocab_spec` (a minimal speech-text input)."""
  vocab_spec: object = SPEECH_SPEC
  low: int = 2
  high: int = 514
  global_batch_size: int = 8
  seq_len: int = 16

  @property
  def vocab_size(self):
    return self.vocab_spec.size

  def make_iterator(self, row_start, row_stop):
    t = self.seq_len

    def row(i):
      tokens = np.random.default_rng(i).integers(self.low, self.high, t + 1).astype(np.int32)
      return {"inputs": tokens[:-1], "targets": tokens[1:], "positions": np.arange(t, dtype=np.int32),
              "segment_ids": np.ones((t,), np.int32), "weights": np.ones((t,), np.float32)}
    n = row_stop - row_start
    return iter(grain.MapDataset.range(10_000 * n).map(row).batch(n).to_iter_dataset())


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
  """A 3-step byte-level text run (AdamW): the checkpoint continued pretraining starts from."""
  root = tmp_path_factory.mktemp("text_run")
  (root / "t.txt").write_text("a text model learns bytes first.\n\nthen it learns audio.\n" * 20)
  train(model_dir=str(root / "run"), model=SMALL.replace(vocab_size=384),
        data=TextSourceConfig(paths=(str(root / "t.txt"),), seq_len=16, global_batch_size=8), optimizer=ADAMW,
        mesh=MESH, checkpoint=CheckpointConfig(save_interval_steps=100), trainer=TrainerConfig(num_steps=3))
  return root / "run"


def test_text_run_saves_its_byte_vocabulary(text_run):
  assert load_spec(str(text_run)) == TEXT_SPEC and load_spec(str(text_run / "export")) == TEXT_SPEC


@pytest.mark.parametrize("source", ["export", "run"])
def test_params_extended_from_an_export_or_a_run(text_run, source):
  path = text_run / "export" if source == "export" else text_run
  mesh = make_mesh(MESH)
  tx = make_optimizer(ADAMW)
  state = initial_state(InitFromConfig(path=str(path)), SMALL.replace(vocab_size=640), tx, mesh, ShardingRules(),
                        SPEECH_SPEC, seed=0)
  old = load_exported_params(str(text_run / "export"))
  table = np.asarray(state.params["embed"]["table"])
  assert table.shape == (640, 32) and state.params["embed"]["table"].sharding.mesh.shape == mesh.shape
  np.testing.assert_array_equal(table[:258], np.asarray(old["embed"]["table"])[:258])
  assert not table[258:].any()
  np.testing.assert_array_equal(np.asarray(state.params["layers"]["mlp"]["wo"]),
                                np.asarray(old["layers"]["mlp"]["wo"]))
  assert int(state.step) == 0 and int(optimizer_count(state.opt_state, None)) == 0


def test_imported_optimizer_state_is_extended_and_keeps_its_count(text_run):
  mesh = make_mesh(MESH)
  tx = make_optimizer(ADAMW)
  state = initial_state(InitFromConfig(path=str(text_run), optimizer_state="imported"),
                        SMALL.replace(vocab_size=640), tx, mesh, ShardingRules(), SPEECH_SPEC, seed=0)
  is_adam = lambda x: isinstance(x, optax.ScaleByAdamState)  # noqa: E731
  (adam,) = [x for x in jax.tree.leaves(state.opt_state, is_leaf=is_adam) if is_adam(x)]
  assert int(adam.count) == 3
  nu = np.asarray(adam.nu["unembed"])  # [embed, vocab]
  assert nu.shape == (32, 640) and nu[:, :258].any()
  # New tokens: zero first moments, second moments at the text rows' mean (per embedding column).
  np.testing.assert_allclose(nu[:, 258:], np.broadcast_to(nu[:, :258].mean(1, keepdims=True), (32, 382)), rtol=1e-6)
  assert not np.asarray(adam.mu["unembed"])[:, 258:].any() and np.asarray(adam.mu["unembed"])[:, :258].any()
  assert np.asarray(adam.mu["layers"]["mlp"]["wo"]).any()


def test_factored_statistics_are_refused(tmp_path):
  (tmp_path / "t.txt").write_text("factored second moments have no rows to extend.\n\n" * 20)
  factored = OptimizerConfig(adafactor_factored=True)
  wide = SMALL.replace(d_model=128)  # optax factors matrices whose dimensions are all >= 128
  train(model_dir=str(tmp_path / "run"), model=wide.replace(vocab_size=384), optimizer=factored,
        data=TextSourceConfig(paths=(str(tmp_path / "t.txt"),), seq_len=16, global_batch_size=8),
        mesh=MESH, trainer=TrainerConfig(num_steps=1, export_params=False))
  with pytest.raises(ValueError, match=r"cannot be extended .* use InitFromConfig.optimizer_state='fresh'"):
    initial_state(InitFromConfig(path=str(tmp_path / "run"), optimizer_state="imported"),
                  wide.replace(vocab_size=640), make_optimizer(factored), make_mesh(MESH), ShardingRules(),
                  SPEECH_SPEC, 0)


def test_refusals(text_run, tmp_path):
  mesh, tx, rules = make_mesh(MESH), make_optimizer(ADAMW), ShardingRules()
  with pytest.raises(ValueError, match=r"d_model: 32 in the checkpoint, 64 in the run"):
    initial_state(InitFromConfig(path=str(text_run)), SMALL.replace(vocab_size=640, d_model=64), tx, mesh, rules,
                  SPEECH_SPEC, 0)
  with pytest.raises(ValueError, match="needs a training run's directory"):
    initial_state(InitFromConfig(path=str(text_run / "export"), optimizer_state="imported"),
                  SMALL.replace(vocab_size=640), tx, mesh, rules, SPEECH_SPEC, 0)
  other_text = make_spec(dataclasses.replace(TEXT, identity="other"), semantic=(256, "sem"))
  with pytest.raises(ValueError, match="the text vocabulary differs"):
    initial_state(InitFromConfig(path=str(text_run)), SMALL.replace(vocab_size=640), tx, mesh, rules, other_text, 0)
  with pytest.raises(FileNotFoundError, match="no model_config.json"):
    initial_state(InitFromConfig(path=str(tmp_path)), SMALL, tx, mesh, rules, SPEECH_SPEC, 0)
  with pytest.raises(ValueError, match="optimizer must be configured as in that run"):
    initial_state(InitFromConfig(path=str(text_run), optimizer_state="imported"), SMALL.replace(vocab_size=640),
                  make_optimizer(OptimizerConfig()), mesh, rules, SPEECH_SPEC, 0)


def test_continued_run_with_frozen_text_rows(text_run, tmp_path):
  """Through the trainer: the run starts from the text run, trains audio rows only where asked, writes where it
  came from, and resuming ignores `init_from`."""
  groups = ParamGroupsConfig(freeze_text_rows=True, other_lr_scale=0.0)
  kwargs = dict(model=SMALL.replace(vocab_size=640), data=SpecSource(), optimizer=ADAMW, mesh=MESH,
                init_from=InitFromConfig(path=str(text_run), optimizer_state="imported"), param_groups=groups,
                checkpoint=CheckpointConfig(save_interval_steps=100))
  train(model_dir=str(tmp_path), trainer=TrainerConfig(num_steps=2, log_every=1), **kwargs)
  assert json.loads((tmp_path / "init_from.json").read_text())["resolved_path"] == str(text_run)
  assert load_spec(str(tmp_path / "export")) == SPEECH_SPEC
  old, new = load_exported_params(str(text_run / "export")), load_exported_params(str(tmp_path / "export"))
  np.testing.assert_array_equal(np.asarray(new["unembed"])[:, :258], np.asarray(old["unembed"])[:, :258])
  np.testing.assert_array_equal(np.asarray(new["embed"]["table"])[:258], np.asarray(old["embed"]["table"])[:258])
  assert np.asarray(new["embed"]["table"])[258:514].any()
  np.testing.assert_array_equal(np.asarray(new["layers"]["attn"]["q"]), np.asarray(old["layers"]["attn"]["q"]))
  assert np.asarray(new["unembed"])[:, 258:514].any()  # audio rows trained (they started at zero)
  logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert logged[0]["step"] == 1
  # The imported optimizer's count (3 steps of the text run) carries the schedule on: lr = 1e-2 * 3 / 10.
  assert logged[0]["lr"] == pytest.approx(3e-3) and logged[1]["lr"] == pytest.approx(4e-3)
  assert json.loads((tmp_path / "init_from.json").read_text())["step"] == 3
  # Resuming: the run's own checkpoint is read; a missing init_from path no longer matters.
  kwargs["init_from"] = InitFromConfig(path=str(tmp_path / "missing"))
  result = train(model_dir=str(tmp_path), trainer=TrainerConfig(num_steps=3, log_every=1), **kwargs)
  assert result["step"] == 3


def test_lr_scales_per_group():
  boxed = abstract_params(Transformer(SMALL.replace(vocab_size=640)))
  scales = lr_scales(ParamGroupsConfig(text_rows_lr_scale=0.1, audio_rows_lr_scale=2.0, other_lr_scale=0.5),
                     boxed, text_rows=258)
  want = np.where(np.arange(640) < 258, 0.1, 2.0).astype(np.float32)
  np.testing.assert_array_equal(scales["embed"]["table"][:, 0], want)
  assert scales["embed"]["table"].shape == (640, 1) and scales["unembed"].shape == (1, 640)
  assert scales["layers"]["attn"]["q"] == np.float32(0.5)
  assert lr_scales(ParamGroupsConfig(), boxed, 258) is None
  # Without a vocabulary spec only the body can be scaled.
  body_only = lr_scales(ParamGroupsConfig(other_lr_scale=0.5), boxed, text_rows=None)
  assert body_only["embed"]["table"] == 1.0 and body_only["final_norm"]["scale"] == 0.5
  with pytest.raises(ValueError, match="need a vocabulary spec"):
    lr_scales(ParamGroupsConfig(freeze_text_rows=True), boxed, text_rows=None)
  with pytest.raises(ValueError, match="contradicts"):
    ParamGroupsConfig(freeze_text_rows=True, text_rows_lr_scale=0.5)
