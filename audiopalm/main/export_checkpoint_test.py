"""Continued pretraining end to end: a transformers Llama imported, its vocabulary extended with semantic tokens,
trained 10 steps on the bundled corpus's AudioPaLM mixture (the `speech_text_from_hf.gin` experiment), exported;
transformers reloads the export (weights and tokenizer) and gives the stack's logits. Also the embedded default's
path (the stack's own text checkpoint → speech-text → export as Cohere) and the manifest."""

import json
import os
import pathlib
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from audiopalm.checkpoints.export import load_exported_params  # noqa: E402
from audiopalm.main import export_checkpoint, import_checkpoint  # noqa: E402
from audiopalm.main.import_checkpoint_test import make_family_dir, make_llama_dir  # noqa: E402
from audiopalm.model import Transformer, TransformerConfig  # noqa: E402
from audiopalm.vocab.spec import load_spec  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow
TOL = 1e-4  # of the peak |logit|, as the import parity tests


def _train(*flags, devices=1):
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  if devices > 1:
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  env.update(JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2")
  proc = subprocess.run([sys.executable, "-m", "audiopalm.main.train", *flags, "--gin.TrainerConfig.log_every=1"],
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, check=False)
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]


def _stack_logits(export_dir, tokens):
  cfg = TransformerConfig(**json.loads((export_dir / "model_config.json").read_text()))
  params = load_exported_params(str(export_dir))
  t = tokens.shape[1]
  return np.asarray(Transformer(cfg).apply({"params": params}, jnp.asarray(tokens),
                                           jnp.broadcast_to(jnp.arange(t), tokens.shape), jnp.ones_like(tokens)))


def _hf_logits(hf_dir, tokens):
  model = transformers.AutoModelForCausalLM.from_pretrained(str(hf_dir), dtype=torch.float32,
                                                            attn_implementation="eager").eval()
  with torch.no_grad():
    return model(torch.tensor(tokens)).logits.numpy()


def _import_and_continue(tmp_path, demo_tokens, *, steps, seq_len, devices=1):
  """Imports `tmp_path/hf` and continues it with speech_text_from_hf.gin on the bundled tokens (batch 8, vocabulary
  extended to 640 rows, a checkpoint at the end); returns the run directory."""
  import_checkpoint.main([f"--hf_dir={tmp_path / 'hf'}", f"--output={tmp_path / 'import'}"])
  run = tmp_path / "run"
  _train("--gin_file=gin_configs/experiments/speech_text_from_hf.gin", f"--gin.MODEL_DIR={run}",
         f"--gin.INIT_DIR={tmp_path / 'import'}", f"--gin.HF_DIR={tmp_path / 'hf'}", "--gin.VOCAB_SIZE=640",
         f"--gin.TOKENS_DIR={demo_tokens}", f"--gin.TRAIN_STEPS={steps}", f"--gin.SEQ_LEN={seq_len}",
         "--gin.BATCH_SIZE=8", "--gin.model_config_from.dtype='float32'", "--gin.model_config_from.remat='none'",
         "--gin.TrainStepConfig.loss_chunk_size=None", "--gin.OptimizerConfig.warmup_steps=2",
         f"--gin.OptimizerConfig.decay_steps={steps}", f"--gin.CheckpointConfig.save_interval_steps={steps // 2}",
         devices=devices)
  return run


def test_import_train_export_reload(tmp_path, demo_tokens):
  make_llama_dir(tmp_path / "hf")
  run = _import_and_continue(tmp_path, demo_tokens, steps=10, seq_len=256)
  spec = load_spec(str(run))
  assert (spec.text.size, spec.semantic.offset, spec.semantic.size, spec.size) == (293, 293, 256, 640)
  logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
  assert [m["step"] for m in logged] == list(range(1, 11))

  manifest = export_checkpoint.main([f"--models=lm={run}", f"--output={tmp_path / 'export'}",
                                     f"--tokens_dir={demo_tokens}"])
  lm = manifest["models"]["lm"]
  assert (lm["step"], lm["hf_architecture"], lm["vocab"]["size"]) == (10, "llama", 640)
  export = tmp_path / "export"
  tokens = np.random.default_rng(0).integers(0, spec.used, size=(2, 40))
  want = _stack_logits(export / "lm", tokens)
  got = _hf_logits(export / "lm" / "hf", tokens)
  assert got.shape == (2, 40, 640)
  assert np.abs(got - want).max() <= TOL * np.abs(want).max()

  tok = transformers.AutoTokenizer.from_pretrained(str(export / "lm" / "hf"))
  assert tok.encode("w5 w7 <|semantic_0|><|semantic_255|>", add_special_tokens=False) == [8, 10, 293, 548]
  assert tok.eos_token_id == 1 and tok.pad_token_id == 0
  semantic = manifest["tokenizers"]["semantic"]
  assert semantic["identity"] == spec.semantic.tokenizer
  assert (export / semantic["files"] / "semantic_tokenizer.json").exists()
  assert "acoustic" not in manifest["tokenizers"]  # the AudioPaLM model has no acoustic ranges


FAMILIES = {"mistral_window": "mistral", "qwen2_5_bias_window": "qwen2", "qwen3_qk_norm": "qwen3",
            "gemma2": "gemma2", "gemma3_text": "gemma3_text"}


@pytest.mark.parametrize("case", sorted(FAMILIES))
def test_each_family_continues_on_eight_devices_and_exports_as_itself(tmp_path, demo_tokens, case):
  """speech_text_from_hf.gin continues every family (its switches on: windows, caps, sandwich and q/k norms,
  biases) for 4 steps sharded over 8 simulated devices (fsdp), and the export loads as the same architecture
  with the stack's logits."""
  make_family_dir(tmp_path / "hf", case)
  run = _import_and_continue(tmp_path, demo_tokens, steps=4, seq_len=128, devices=8)
  logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
  assert [m["step"] for m in logged] == [1, 2, 3, 4] and all(np.isfinite(m["loss"]) for m in logged)
  manifest = export_checkpoint.main([f"--models=lm={run}", f"--output={tmp_path / 'export'}",
                                     f"--tokens_dir={demo_tokens}"])
  assert manifest["models"]["lm"]["hf_architecture"] == FAMILIES[case]
  tokens = np.random.default_rng(0).integers(0, 549, size=(2, 40))
  want = _stack_logits(tmp_path / "export" / "lm", tokens)
  config = json.loads((tmp_path / "export" / "lm" / "hf" / "config.json").read_text())
  assert config["model_type"] == FAMILIES[case]
  got = _hf_logits(tmp_path / "export" / "lm" / "hf", tokens)
  assert np.abs(got - want).max() <= TOL * np.abs(want).max()


def test_embedded_default_text_to_speech_text_to_cohere(tmp_path, demo_tokens):
  """The stack's own tiny text checkpoint, extended and continued on the bundled tokens, exported: the PaLM block
  becomes Cohere in transformers, and a model no architecture represents is exported as orbax only."""
  _train("--gin_file=gin_configs/experiments/tiny.gin", f"--gin.MODEL_DIR={tmp_path / 'text'}",
         "--gin.TRAIN_STEPS=3")
  _train("--gin_file=gin_configs/experiments/speech_text_from_text_demo.gin", f"--gin.MODEL_DIR={tmp_path / 'st'}",
         f"--gin.INIT_DIR={tmp_path / 'text'}", f"--gin.TOKENS_DIR={demo_tokens}", f"--gin.TEXT_DIR={demo_tokens}",
         "--gin.TRAIN_STEPS=3")
  text_params = load_exported_params(str(tmp_path / "text" / "export"))
  export_checkpoint.main([f"--models=lm={tmp_path / 'st'}", f"--models=text={tmp_path / 'text' / 'export'}",
                          f"--output={tmp_path / 'export'}", "--dtype=bfloat16"])
  manifest = json.loads((tmp_path / "export" / "manifest.json").read_text())
  assert manifest["models"]["lm"]["hf_architecture"] == "cohere" and manifest["models"]["lm"]["dtype"] == "bfloat16"
  params = load_exported_params(str(tmp_path / "export" / "lm"))
  assert params["embed"]["table"].dtype == jnp.bfloat16 and params["embed"]["table"].shape == (640, 128)
  assert manifest["models"]["text"]["vocab"]["size"] == 384
  # Text rows came from the text model (3 speech-text steps moved them a little; bf16 rounding on top).
  text_rows = np.asarray(params["embed"]["table"][:258], np.float32)
  drift = np.abs(text_rows - np.asarray(text_params["embed"]["table"][:258]))
  assert drift.mean() < 0.1
  tok = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "export" / "lm" / "hf"))
  assert tok.encode("[ASR English]", add_special_tokens=False) == [ord(c) + 2 for c in "[ASR English]"]

  with pytest.raises(FileExistsError, match="--overwrite"):
    export_checkpoint.main([f"--models=lm={tmp_path / 'st'}", f"--output={tmp_path / 'export'}"])
  cfg = json.loads((tmp_path / "text" / "export" / "model_config.json").read_text())
  (tmp_path / "text" / "export" / "model_config.json").write_text(json.dumps({**cfg, "norm": "rmsnorm"}))
  manifest = export_checkpoint.main([f"--models=text={tmp_path / 'text' / 'export'}",
                                     f"--output={tmp_path / 'export'}", "--overwrite"])
  text = manifest["models"]["text"]
  assert text["hf"] is None and "norm='rmsnorm'" in text["hf_skipped"]
  assert (tmp_path / "export" / "text" / "params").exists() and not (tmp_path / "export" / "lm").exists()
