r"""Import a Hugging Face causal LM (Llama 3.x, Mistral, Qwen2/2.5, Qwen3, Gemma 1/2/3 and a multimodal Gemma 3's
text tower), or one of the stack's own checkpoints, as the stack's params + config + vocabulary.

    python -m audiopalm.main.import_checkpoint --hf_dir=/models/gemma-2b --output=runs/gemma_2b_import [--dtype=bfloat16]
    python -m audiopalm.main.import_checkpoint --checkpoint=runs/tiny --output=runs/tiny_import

`--checkpoint` is a training run's model directory (its newest checkpoint's parameters are taken) or an export;
its model_config.json and vocab_spec.json are carried over. (A continued-pretraining run can also start from a run
directory directly: InitFromConfig.path; that also offers its optimizer state.)

`--hf_dir` is a transformers `save_pretrained` directory, local or gs:// (config.json, *.safetensors,
tokenizer.json and tokenizer_config.json naming eos/pad); nothing is downloaded. Written to `--output` (what
`audiopalm.checkpoints.export.load_exported_params` and the trainer's continued-pretraining runs read):
`params/` (orbax, sharded arrays), `model_config.json` (TransformerConfig), `vocab_spec.json` (the text
vocabulary, kind 'huggingface'; audio ranges are added by the vocabulary extension). A config option the model
cannot represent (an output-projection or MLP bias, other RoPE types, bidirectional attention, ...) is refused
with the list of them.

The parameters are assembled over all local devices (fsdp over every device, the default rules): each tensor is
read once (one ranged read; a layer, or a block of embedding rows, at a time), converted once, and placed shard
by shard, so host memory holds the parameters and one piece (docs/benchmarks.md, "Importing a checkpoint").
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import time
from typing import Sequence

import jax

from audiopalm.checkpoints.export import check_output, export_params, export_source
from audiopalm.checkpoints.source import find_source
from audiopalm.hf.import_lm import config_from_hf, load_hf_params
from audiopalm.hf.tensors import read_config
from audiopalm.model import Transformer, TransformerConfig
from audiopalm.model.params import abstract_params
from audiopalm.sharding.mesh import MeshConfig, make_mesh
from audiopalm.sharding.rules import ShardingRules, params_shardings
from audiopalm.vocab.combined import load_text_vocab
from audiopalm.vocab.spec import VocabSpec, make_spec

log = logging.getLogger(__name__)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  p = argparse.ArgumentParser(prog="python -m audiopalm.main.import_checkpoint", description=__doc__.split("\n\n")[0])
  source = p.add_mutually_exclusive_group(required=True)
  source.add_argument("--hf_dir", help="a transformers save_pretrained directory, local (copy one on GCS down "
                      "first: gcloud storage cp -r)")
  source.add_argument("--checkpoint", help="a training run's model directory or an export of this stack")
  p.add_argument("--output", required=True, help="directory to write params/, model_config.json, vocab_spec.json")
  p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                 help="storage dtype of the imported parameters (with --hf_dir the compute dtype follows it)")
  p.add_argument("--overwrite", action="store_true", help="replace an existing --output")
  return p.parse_args(argv)


def text_spec(hf_dir: str, cfg: TransformerConfig) -> VocabSpec:
  """The checkpoint's vocabulary as a spec: its tokenizer's ids, padded to the model's embedding rows."""
  text = load_text_vocab("huggingface", hf_dir)
  if text.spec.size > cfg.vocab_size:
    raise ValueError(f"the tokenizer has {text.spec.size} ids but the model only {cfg.vocab_size} embedding rows")
  spec = make_spec(text.spec, pad_to_multiple=1)
  return dataclasses.replace(spec, size=cfg.vocab_size)  # rows past the tokenizer's ids exist but are never produced


def import_checkpoint(hf_dir: str, output: str, dtype: str = "float32") -> dict:
  start = time.perf_counter()
  cfg = config_from_hf(read_config(hf_dir), dtype=dtype, param_dtype=dtype)
  spec = text_spec(hf_dir, cfg)
  mesh = make_mesh(MeshConfig())  # fsdp over every local device
  shardings = params_shardings(abstract_params(Transformer(cfg)), mesh, ShardingRules())
  params = load_hf_params(hf_dir, cfg, shardings)
  export_params(params, cfg, output, spec)
  summary = {"output": output, "layers": cfg.num_layers, "d_model": cfg.d_model, "vocab_size": cfg.vocab_size,
             "text_vocab": f"{spec.text.kind}:{spec.text.identity} ({spec.text.size} ids)",
             "devices": len(jax.devices()), "seconds": round(time.perf_counter() - start, 1)}
  log.info("Imported %s → %s", hf_dir, summary)
  return summary


def import_stack_checkpoint(path: str, output: str, dtype: str = "float32") -> dict:
  """The newest parameters of a run (or an export) → an export at `output`, stored in `dtype`."""
  start = time.perf_counter()
  source = find_source(path)
  _, cfg = export_source(source, output, dtype)
  summary = {"output": output, "source": str(source.path), "step": source.step, "layers": cfg.num_layers,
             "d_model": cfg.d_model, "vocab_size": cfg.vocab_size, "devices": len(jax.devices()),
             "seconds": round(time.perf_counter() - start, 1)}
  log.info("Imported %s → %s", path, summary)
  return summary


def main(argv: Sequence[str] | None = None) -> dict:
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s] %(message)s",
                      datefmt="%H:%M:%S")
  args = parse_args(argv)
  check_output(args.output, [args.checkpoint or args.hf_dir], args.overwrite)
  if args.checkpoint:
    summary = import_stack_checkpoint(args.checkpoint, args.output, args.dtype)
  else:
    summary = import_checkpoint(args.hf_dir, args.output, args.dtype)
  print(summary)
  return summary


if __name__ == "__main__":
  main()
