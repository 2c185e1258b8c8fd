"""A trained decoder ready to generate: parameters on a mesh, its config and its combined vocabulary.

    model = load_model("runs/speech_text_from_text")         # a run directory (newest checkpoint) or an export
    tokens = model.generate(prompts, 64, stop_tokens=[model.eos_id], allowed_mask=model.mask("text"))

`path` is anything `audiopalm.checkpoints.source.find_source` reads: an export (`params/` + `model_config.json` + `vocab_spec.json`,
e.g. a run's `export/`, `audiopalm.main.export_checkpoint`'s `<name>/`) or a run's model directory. Generation needs the
vocabulary spec (which ids are text, semantic or which acoustic level), so a checkpoint without one is refused.
The text vocabulary is loaded from the path its spec records (the byte vocabulary needs none); `text_vocab_path`
points elsewhere (e.g. an export's `tokenizers/text` on another machine), and its identity must match.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax
import numpy as np

from audiopalm.checkpoints.source import find_source, load_source
from audiopalm.formats.base import config_from_json, default_config, evaluation_config
from audiopalm.inference.decode import generate
from audiopalm.inference.decode_streams import generate_streams
from audiopalm.inference.decode_words import generate_words
from audiopalm.inference.sampling import SamplingConfig, allowed_mask
from audiopalm.model import TransformerConfig
from audiopalm.sharding.mesh import MeshConfig, make_mesh
from audiopalm.sharding.rules import ShardingRules
from audiopalm.vocab.combined import CombinedVocabulary, load_text_vocab
from audiopalm.vocab.spec import SPEC_FILE, VocabSpec

PROMPT_BUCKET = 64  # prefill lengths are rounded up to a multiple of this: few compilations for many prompts


@dataclasses.dataclass(frozen=True, eq=False)
class LoadedModel:
  """A decoder's parameters (laid out on `mesh` by `rules`), config and vocabulary."""

  path: str
  cfg: TransformerConfig
  params: Any
  vocab: CombinedVocabulary
  step: int | None
  mesh: jax.sharding.Mesh
  rules: ShardingRules
  run_config: dict[str, Any] | None = None  # the resolved config of the run that trained it, when saved

  @property
  def spec(self) -> VocabSpec:
    return self.vocab.spec

  @property
  def trained_data(self) -> dict[str, Any]:
    """The training input of the run that made this model, as its `train_config.json` holds it ({} if unsaved)."""
    return (self.run_config or {}).get("data") or {}

  def format_config(self, name: str) -> Any:
    """The config of format `name` as this model was trained with it: the first component of that format in its
    run's mixture (`train_config.json`), training-time augmentation off; the format's default when the run had
    none or saved no config."""
    components = self.trained_data.get("components") or ()
    trained = [config_from_json(name, c.get("config")) for c in components if c.get("format") == name]
    config = trained[0] if trained else None
    return evaluation_config(config if config is not None else default_config(name))

  def format_configs(self, names: Sequence[str]) -> dict[str, Any]:
    """{name: `format_config(name)`} for each format in `names`."""
    return {name: self.format_config(name) for name in names}

  @property
  def eos_id(self) -> int:
    return self.spec.text.eos_id

  def mask(self, modality: str, *, stop: bool = True) -> np.ndarray:
    """[vocab_size] bool: the ids of one modality ('text', 'semantic', 'acoustic_<q>'), plus EOS if `stop`."""
    return allowed_mask(self.spec, modality, stop_tokens=[self.eos_id] if stop else [],
                        vocab_size=self.cfg.vocab_size)

  def generate(self, prompts: Sequence[np.ndarray], max_new_tokens: int, *,
               sampling: SamplingConfig = SamplingConfig(), rng: jax.Array | None = None,
               stop_tokens: Sequence[int] = (), allowed_mask: np.ndarray | None = None,
               mask_phase: int | Sequence[int] = 0, batch_size: int | None = None) -> list[np.ndarray]:
    """`inference.generate` on this model's mesh, `batch_size` prompts at a time (a short last batch is filled
    with copies of its first prompt, so every batch has one shape); new tokens per prompt, stop token included.
    Each batch samples with its own key split from `rng`: sampled outputs depend on `batch_size`."""
    rows = [np.asarray(p, np.int32).reshape(-1) for p in prompts]
    if not rows:
      return []
    size = batch_size or len(rows)
    rng = jax.random.key(0) if rng is None else rng
    phases = np.broadcast_to(np.asarray(mask_phase, np.int32), (len(rows),))
    out: list[np.ndarray] = []
    for start in range(0, len(rows), size):
      batch, phase = rows[start:start + size], list(phases[start:start + size])
      real = len(batch)
      batch, phase = batch + [batch[0]] * (size - real), phase + [phase[0]] * (size - real)
      rng, key = jax.random.split(rng)
      out += generate(self.params, self.cfg, batch, max_new_tokens, sampling=sampling, rng=key,
                      stop_tokens=stop_tokens, allowed_mask=allowed_mask, mask_phase=phase,
                      pad_prompts_to=PROMPT_BUCKET, mesh=self.mesh, rules=self.rules)[:real]
    return out


  def generate_streams(self, prompts: Sequence[np.ndarray], forced: Sequence[tuple[np.ndarray, np.ndarray]],
                       new_rows: int, *, sampling: SamplingConfig = SamplingConfig(), rng: jax.Array | None = None,
                       batch_size: int | None = None) -> list[np.ndarray]:
    """`inference.decode_streams.generate_streams` (a multi-stream model) on this model's mesh, `batch_size`
    prompts at a time (a short last batch filled with copies of its first prompt); [new_rows, S] per prompt."""
    if len(prompts) != len(forced):
      raise ValueError(f"generate_streams: {len(prompts)} prompts but {len(forced)} forced patterns")
    return self._in_batches(prompts, forced, batch_size, rng, lambda batch, known, key: generate_streams(
        self.params, self.cfg, batch, known, new_rows, sampling=sampling, rng=key, pad_prompts_to=PROMPT_BUCKET,
        mesh=self.mesh, rules=self.rules))

  def generate_words(self, prompts: Sequence[np.ndarray], words: Sequence[Sequence[np.ndarray]], max_new_tokens: int,
                     *, max_word_tokens: int = 64, sampling: SamplingConfig = SamplingConfig(),
                     rng: jax.Array | None = None, batch_size: int | None = None) -> list[np.ndarray]:
    """`inference.decode_words.generate_words` (word-interleaved TTS: semantic audio between given words) on this
    model's mesh, `batch_size` prompts at a time (a short last batch filled with copies of its first prompt); the
    new tokens per prompt, EOS included."""
    if len(prompts) != len(words):
      raise ValueError(f"generate_words: {len(prompts)} prompts but {len(words)} word lists")
    semantic = self.spec.semantic
    allowed = self.mask("semantic") | self.mask("text")  # audio; any text token or EOS ends a word
    return self._in_batches(prompts, words, batch_size, rng, lambda batch, given, key: generate_words(
        self.params, self.cfg, batch, given, audio_range=(semantic.offset, semantic.end), eos_id=self.eos_id,
        max_new_tokens=max_new_tokens, allowed=allowed, max_word_tokens=max_word_tokens, sampling=sampling, rng=key,
        pad_prompts_to=PROMPT_BUCKET, mesh=self.mesh, rules=self.rules))

  @staticmethod
  def _in_batches(prompts: Sequence[Any], extra: Sequence[Any], batch_size: int | None, rng: jax.Array | None,
                  run: Any) -> list[np.ndarray]:
    """run(prompts, extras, key) over `batch_size` prompts at a time (a short last batch filled with copies of its
    first), each batch with its own key split from `rng` (default key 0); the real rows' results in order."""
    size = batch_size or max(len(prompts), 1)
    rng = jax.random.key(0) if rng is None else rng
    out: list[np.ndarray] = []
    for start in range(0, len(prompts), size):
      batch, more = list(prompts[start:start + size]), list(extra[start:start + size])
      real = len(batch)
      rng, key = jax.random.split(rng)
      out += run(batch + [batch[0]] * (size - real), more + [more[0]] * (size - real), key)[:real]
    return out


def load_model(path: str, *, mesh: jax.sharding.Mesh | None = None, rules: ShardingRules = ShardingRules(),
               text_vocab_path: str | None = None) -> LoadedModel:
  """The decoder at `path` (see the module docstring) on `mesh` (default: fsdp over every device)."""
  source = find_source(path)
  if source.spec is None:
    raise ValueError(f"{source.path}: no {SPEC_FILE}; generation needs the combined vocabulary the model was "
                     "trained with (runs on speech-text data save it)")
  mesh = mesh if mesh is not None else make_mesh(MeshConfig())
  params = load_source(source, mesh, rules)
  text = load_text_vocab(source.spec.text.kind, text_vocab_path or source.spec.text.path)
  return LoadedModel(str(source.path), source.model, params, CombinedVocabulary(source.spec, text), source.step,
                     mesh, rules, source.run_config)


def audio_codes(model: LoadedModel, ids: np.ndarray, modality: str) -> np.ndarray:
  """Generated ids [T] of one audio range (EOS and anything after it dropped) → codes [T'] of that range."""
  ids = np.asarray(ids).reshape(-1)
  stop = np.flatnonzero(ids == model.eos_id)
  ids = ids[:stop[0]] if stop.size else ids
  ranges = {r.name: r for r in model.spec.audio_ranges}
  r = ranges[modality]
  if ids.size and (ids.min() < r.offset or ids.max() >= r.end):
    raise ValueError(f"{model.path}: generated ids outside the {modality} range [{r.offset}, {r.end})")
  return (ids - r.offset).astype(np.int32)
