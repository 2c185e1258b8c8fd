r"""Export trained models for downstream fine-tuning: orbax params + config + vocabulary, Hugging Face checkpoints
with the extended vocabulary's tokenizer, and a manifest.

    python -m audiopalm.main.export_checkpoint --models=lm=runs/speech_text_from_text --output=exports/audiopalm_demo \
        [--models=coarse=runs/audiolm_coarse_demo --models=fine=runs/audiolm_fine_demo] \
        [--tokens_dir=runs/tokens_demo] [--dtype=bfloat16] [--no_hf]

Each `--models=NAME=PATH` is a training run's model directory (its newest checkpoint) or an export (`params/` +
`model_config.json`, e.g. a run's `export/` or audiopalm.main.import_checkpoint's output). Usual names: `lm` (the AudioPaLM
model), `semantic`, `coarse`, `fine` (the AudioLM stages). Written to `--output`:

    manifest.json             every model (where it came from, step, architecture, vocabulary) and every tokenizer
                              with its identity, the files to use for each
    <name>/params/            orbax params-only checkpoint in --dtype (`load_exported_params`)
    <name>/model_config.json  TransformerConfig (param_dtype = --dtype)
    <name>/vocab_spec.json    the combined vocabulary: text ids, specials, audio ranges and their tokenizers
    <name>/hf/                config.json + *.safetensors + tokenizer.json/tokenizer_config.json with one added
                              token per audio code (<|semantic_17|>, <|acoustic_2_5|>): loads with
                              transformers.AutoModelForCausalLM / AutoTokenizer. Omitted, with the reason in the
                              manifest, for a model no transformers architecture represents exactly.
    tokenizers/<role>/        with --tokens_dir: a copy of the semantic / acoustic tokenizer the models' audio
                              ranges were made with (from the token dataset's metadata.json), identities checked

The export is assembled in a temporary sibling directory and renamed into place when complete; an existing
--output is refused unless --overwrite.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import logging
import os
import time
from typing import Any, Sequence

import jax
from etils import epath

from audiopalm.checkpoints.export import check_output, export_source
from audiopalm.checkpoints.source import Source, find_source
from audiopalm.files import storage
from audiopalm.files.paths import absolute
from audiopalm.hf.export_lm import family_of, save_hf_checkpoint
from audiopalm.hf.export_tokenizer import save_tokenizer
from audiopalm.model import param_count
from audiopalm.vocab.combined import load_text_vocab
from audiopalm.vocab.spec import VocabSpec

log = logging.getLogger(__name__)
MANIFEST = "manifest.json"
MANIFEST_VERSION = 1


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  p = argparse.ArgumentParser(prog="python -m audiopalm.main.export_checkpoint", description=__doc__.split("\n\n")[0])
  p.add_argument("--models", action="append", required=True, metavar="NAME=PATH",
                 help="a model to export: a run's model directory or an export (repeat for the stage models)")
  p.add_argument("--output", required=True, help="the export directory (local)")
  p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"), help="storage dtype of the weights")
  p.add_argument("--no_hf", action="store_true", help="skip the Hugging Face checkpoints")
  p.add_argument("--tokens_dir", default=None,
                 help="a token dataset made with the models' audio tokenizers: copies them into the export")
  p.add_argument("--text_path", default=None,
                 help="the text tokenizer's directory when the one recorded in vocab_spec.json has moved")
  p.add_argument("--overwrite", action="store_true", help="replace an existing --output")
  return p.parse_args(argv)


def _models(items: Sequence[str]) -> dict[str, str]:
  models = {}
  for item in items:
    name, sep, path = item.partition("=")
    if not sep or not name or not path:
      raise ValueError(f"--models={item!r}: expected NAME=PATH")
    if name in models or name == "tokenizers" or "/" in name:
      raise ValueError(f"--models: name {name!r} repeated or reserved")
    models[name] = path
  return models


def _vocab_summary(spec: VocabSpec | None) -> dict[str, Any] | None:
  if spec is None:
    return None
  return {"size": spec.size, "used": spec.used,
          "text": {"kind": spec.text.kind, "identity": spec.text.identity, "size": spec.text.size},
          "specials": list(spec.specials),
          "audio": [{"name": r.name, "offset": r.offset, "size": r.size, "tokenizer": r.tokenizer}
                    for r in spec.audio_ranges]}


def export_model(name: str, source: Source, out: epath.Path, dtype: str, hf: bool, text_path: str | None) -> dict:
  """Writes `out/<name>/` (orbax params, config, spec, and hf/ when representable); returns its manifest entry."""
  if jax.process_count() > 1:
    raise ValueError("audiopalm.main.export_checkpoint runs as one process (the HF files are written from one host)")
  params, cfg = export_source(source, str(out / name), dtype)
  entry: dict[str, Any] = {
      "source": str(source.path), "step": source.step, "orbax": f"{name}/params", "config": f"{name}/model_config.json",
      "vocab_spec": f"{name}/vocab_spec.json" if source.spec else None, "dtype": dtype,
      "parameters": param_count(cfg), "model_config": dataclasses.asdict(cfg), "vocab": _vocab_summary(source.spec),
      "hf": None, "hf_architecture": None, "hf_skipped": None}
  if not hf:
    entry["hf_skipped"] = "--no_hf"
    return entry
  try:
    family = family_of(cfg)
  except ValueError as e:
    entry["hf_skipped"] = str(e)
    log.warning("%s: no Hugging Face export: %s", name, e)
    return entry
  spec = source.spec
  ids = {}
  if spec is not None:
    ids = {"eos_token_id": spec.text.eos_id, "pad_token_id": spec.text.pad_id}
  save_hf_checkpoint(params, cfg, str(out / name / "hf"), dtype=dtype, **ids)
  entry.update(hf=f"{name}/hf", hf_architecture=family)
  if spec is None:
    entry["hf_tokenizer"] = None
    return entry
  text = load_text_vocab(spec.text.kind, text_path or spec.text.path)
  if text.spec != spec.text:
    raise ValueError(f"{name}: the text tokenizer at {text_path or spec.text.path} is "
                     f"{text.spec.kind}:{text.spec.identity}, the model was trained with "
                     f"{spec.text.kind}:{spec.text.identity}")
  save_tokenizer(spec, text, str(out / name / "hf"))
  entry["hf_tokenizer"] = f"{name}/hf/tokenizer.json"
  return entry


def _tokenizer_dir(path: str, tokens_dir: str) -> epath.Path:
  """A tokenizer path from a dataset's metadata.json: absolute or a URL as it is; a relative one against the
  working directory (where the tokenize job ran, e.g. the repository root) or else the dataset's directory."""
  candidates = [epath.Path(path)] if "://" in path or os.path.isabs(path) else [
      epath.Path(os.path.abspath(path)), epath.Path(tokens_dir) / path]
  for candidate in candidates:
    if storage.exists(candidate):
      return candidate
  raise FileNotFoundError(f"the tokenizer {path!r} named by {tokens_dir}/metadata.json is not at "
                          f"{' or '.join(map(str, candidates))}")


def _copy_tree(src: epath.Path, dst: epath.Path) -> None:
  """Copies a directory (local or gs://) file by file."""
  dst.mkdir(parents=True, exist_ok=True)
  for item in src.iterdir():
    if item.is_dir():
      _copy_tree(item, dst / item.name)
    else:
      item.copy(dst / item.name)


def _tokenizers(specs: dict[str, VocabSpec], tokens_dir: str | None, out: epath.Path) -> dict[str, Any]:
  """The tokenizers the models' vocabularies name, by role, copied from the token dataset when given."""
  text = {s.text.identity: {"kind": s.text.kind, "identity": s.text.identity, "size": s.text.size,
                            "pad_id": s.text.pad_id, "eos_id": s.text.eos_id} for s in specs.values()}
  wanted = {"semantic": {s.semantic.tokenizer for s in specs.values() if s.semantic},
            "acoustic": {r.tokenizer for s in specs.values() for r in s.acoustic}}
  result: dict[str, Any] = {"text": list(text.values())}
  info = {}
  if tokens_dir is not None:
    info = json.loads(storage.read_text(storage.join(tokens_dir, "metadata.json")))["tokenizers"]
  for role, identities in wanted.items():
    if not identities:
      continue
    if len(identities) > 1:
      raise ValueError(f"the models' vocabularies name different {role} tokenizers: {sorted(identities)}")
    (identity,) = identities
    entry: dict[str, Any] = {"identity": identity, "files": None}
    if tokens_dir is not None:
      if role not in info:
        raise ValueError(f"--tokens_dir {tokens_dir}: its metadata.json names no {role} tokenizer")
      if info[role]["identity"] != identity:
        raise ValueError(f"--tokens_dir {tokens_dir}: its {role} tokenizer is {info[role]['identity']!r}, the "
                         f"models were trained with {identity!r}")
      _copy_tree(_tokenizer_dir(info[role]["path"], tokens_dir), out / "tokenizers" / role)
      entry.update({k: info[role][k] for k in ("kind", "vocab_size", "num_codebooks", "frame_rate", "sample_rate")},
                   files=f"tokenizers/{role}", load="audiopalm.tokenizers.base.load_tokenizer")
    result[role] = entry
  return result


def export_checkpoint(models: dict[str, str], output: str, dtype: str = "float32", hf: bool = True,
                      tokens_dir: str | None = None, text_path: str | None = None, overwrite: bool = False) -> dict:
  start = time.perf_counter()
  final = check_output(output, list(models.values()), overwrite)
  sources = {name: find_source(path) for name, path in models.items()}  # fails before anything is written
  temp = final.parent / f".{final.name}.tmp-{os.getpid()}"
  if temp.exists():
    temp.rmtree()
  temp.mkdir(parents=True)
  try:
    entries = {}
    for name, source in sources.items():
      log.info("Exporting %s from %s%s", name, source.path, f" (step {source.step})" if source.step else "")
      entries[name] = export_model(name, source, temp, dtype, hf, text_path)
    specs = {name: s.spec for name, s in sources.items() if s.spec is not None}
    manifest = {"format_version": MANIFEST_VERSION,
                "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "models": entries, "tokenizers": _tokenizers(specs, tokens_dir, temp)}
    storage.write_text(temp / MANIFEST, json.dumps(manifest, indent=2))
    if final.exists():
      final.rmtree()
    temp.rename(final)
  except BaseException:
    if temp.exists():
      temp.rmtree()
    raise
  log.info("Exported %s to %s in %.1f s", sorted(models), final, time.perf_counter() - start)
  return manifest


def main(argv: Sequence[str] | None = None) -> dict:
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s] %(message)s",
                      datefmt="%H:%M:%S")
  args = parse_args(argv)
  manifest = export_checkpoint(_models(args.models), args.output, args.dtype, not args.no_hf, args.tokens_dir,
                               args.text_path, args.overwrite)
  rows = [(name, str(e["step"]), e["hf_architecture"] or "-", f"{e['parameters'] / 1e6:.2f}M")
          for name, e in manifest["models"].items()]
  print(f"{'model':<10} {'step':>6} {'hf':>8} {'params':>9}")
  for row in rows:
    print(f"{row[0]:<10} {row[1]:>6} {row[2]:>8} {row[3]:>9}")
  print(f"export: {absolute(args.output)}")
  return manifest


if __name__ == "__main__":
  main()
