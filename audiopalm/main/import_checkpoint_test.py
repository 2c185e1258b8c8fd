"""`audiopalm.main.import_checkpoint`: a transformers Llama directory (weights + tokenizer) → orbax params, config and
vocabulary spec that give transformers' logits."""

import json

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from audiopalm.checkpoints.export import load_exported_params  # noqa: E402
from audiopalm.data.text_source import TextSourceConfig  # noqa: E402
from audiopalm.main import import_checkpoint  # noqa: E402
from audiopalm.main.presets import model_preset  # noqa: E402
from audiopalm.main.train import train  # noqa: E402
from audiopalm.model import Transformer, TransformerConfig  # noqa: E402
from audiopalm.model.params import abstract_params  # noqa: E402
from audiopalm.sharding.params import unbox  # noqa: E402
from audiopalm.training.trainer import TrainerConfig  # noqa: E402
from audiopalm.vocab.spec import load_spec  # noqa: E402

VOCAB = 301


def make_llama_dir(tmp_path):
  """A random small Llama (GQA, untied, 301 rows) with a word-level tokenizer of 293 ids, saved in `tmp_path`."""
  torch.manual_seed(0)
  model = transformers.LlamaForCausalLM(transformers.LlamaConfig(
      hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
      vocab_size=VOCAB, max_position_embeddings=128)).eval()
  model.save_pretrained(tmp_path, safe_serialization=True)
  save_word_tokenizer(tmp_path)
  return model


def make_family_dir(tmp_path, case):
  """A random small model of one of `audiopalm.hf.families_test.CASES` (every switch of its family on, 301 rows)
  with the word-level tokenizer, saved in `tmp_path`."""
  from audiopalm.hf import families_test  # pylint: disable=import-outside-toplevel
  config_cls, options, _, _ = families_test.CASES[case]
  torch.manual_seed(0)
  config = config_cls(**{**families_test.SMALL, **options, "vocab_size": VOCAB})
  model = transformers.AutoModelForCausalLM.from_config(config).eval()
  families_test.perturb(model)
  model.save_pretrained(tmp_path, safe_serialization=True)
  save_word_tokenizer(tmp_path)
  return model


def save_word_tokenizer(tmp_path):
  """A word-level tokenizer of 293 ids ("w0".."w289" after <pad>, <eos>, <unk>) in `tmp_path`."""
  import tokenizers  # pylint: disable=import-outside-toplevel
  words = {"<pad>": 0, "<eos>": 1, "<unk>": 2, **{f"w{i}": i + 3 for i in range(290)}}  # 293 ids < 301 rows
  tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(words, unk_token="<unk>"))
  tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
  tok.save(str(tmp_path / "tokenizer.json"))
  (tmp_path / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<eos>", "pad_token": "<pad>"}))


def test_import_gives_the_reference_logits_and_the_text_vocabulary(tmp_path):
  reference = make_llama_dir(tmp_path / "hf")
  summary = import_checkpoint.main([f"--hf_dir={tmp_path / 'hf'}", f"--output={tmp_path / 'out'}"])
  assert summary["layers"] == 2 and summary["devices"] == 8
  cfg = TransformerConfig(**json.loads((tmp_path / "out" / "model_config.json").read_text()))
  params = load_exported_params(str(tmp_path / "out"), unbox(abstract_params(Transformer(cfg))))
  tokens = np.random.default_rng(0).integers(0, VOCAB, size=(2, 24))
  with torch.no_grad():
    want = reference(torch.tensor(tokens)).logits.numpy()
  got = Transformer(cfg).apply({"params": params}, tokens, np.broadcast_to(np.arange(24), tokens.shape),
                               np.ones_like(tokens))
  assert np.abs(np.asarray(got) - want).max() <= 1e-4 * np.abs(want).max()
  spec = load_spec(str(tmp_path / "out"))
  assert (spec.text.kind, spec.text.size, spec.text.eos_id, spec.text.pad_id, spec.size) == (
      "huggingface", 293, 1, 0, VOCAB)
  assert spec.semantic is None and spec.acoustic == ()


def test_unsupported_checkpoints_are_refused_before_anything_is_written(tmp_path):
  make_llama_dir(tmp_path / "hf")
  config = json.loads((tmp_path / "hf" / "config.json").read_text())
  (tmp_path / "hf" / "config.json").write_text(json.dumps({**config, "attention_bias": True}))
  with pytest.raises(ValueError, match="attention_bias=true"):
    import_checkpoint.main([f"--hf_dir={tmp_path / 'hf'}", f"--output={tmp_path / 'out'}"])
  assert not (tmp_path / "out").exists()


def test_stack_checkpoint_import_takes_the_newest_parameters(tmp_path):
  """A run of the stack (its newest checkpoint) → an export with the same parameters, config and spec."""
  (tmp_path / "t.txt").write_text("some text to learn from.\n\n" * 20)
  cfg = model_preset("tiny", num_layers=1, d_model=32, d_ff=64, head_dim=8, vocab_size=384)
  train(model_dir=str(tmp_path / "run"), model=cfg, trainer=TrainerConfig(num_steps=2),
        data=TextSourceConfig(paths=(str(tmp_path / "t.txt"),), seq_len=16, global_batch_size=8))
  summary = import_checkpoint.main([f"--checkpoint={tmp_path / 'run'}", f"--output={tmp_path / 'out'}"])
  assert summary["step"] == 2
  want = load_exported_params(str(tmp_path / "run" / "export"))  # the trainer's own export of step 2
  got = load_exported_params(str(tmp_path / "out"))
  for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(got)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert load_spec(str(tmp_path / "out")) == load_spec(str(tmp_path / "run"))
  assert TransformerConfig(**json.loads((tmp_path / "out" / "model_config.json").read_text())) == cfg

  with pytest.raises(FileExistsError, match="--overwrite"):
    import_checkpoint.main([f"--checkpoint={tmp_path / 'run'}", f"--output={tmp_path / 'out'}"])
  with pytest.raises(ValueError, match="overlaps the checkpoint"):
    import_checkpoint.main([f"--checkpoint={tmp_path / 'run'}", f"--output={tmp_path / 'run' / 'imported'}"])
