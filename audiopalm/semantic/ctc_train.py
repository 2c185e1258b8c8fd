"""Trains the supervised unit encoder (`audiopalm.ssl.ctc_encoder`): CTC over the transcripts' characters.

    summary = train_ctc_encoder(audio_paths=["runs/main/speech/train", "audiopalm/data/assets/demo_speech/train"],
                                output_dir="runs/main/unit_encoder", encoder=CtcEncoderConfig(),
                                config=CtcTrainConfig(steps=1000))
    # → output_dir is an encoder directory (config.json, model.safetensors) + train.json; then its units:
    #   fit_semantic_tokenizer(encoder_path=output_dir, layer=encoder.num_layers, downsample=1, ...)

Input: LibriSpeech-layout directories (`<id>.flac` beside a `*.trans.txt` with lines `<id> TRANSCRIPT`). Every
transcribed recording is decoded once and turned into MFCC frames up front (the embedded default's 2 h are
200 k frames, 60 MB); recordings that cannot be decoded, have no transcript, or whose transcript is too long for
CTC at the frame rate are logged with the reason and skipped. The alphabet is every character of the kept
transcripts (upper-cased).

One step: `batch_size` recordings drawn at random (recordings longer than `max_seconds` are skipped up front;
the embedded default's last a few seconds), padded to the longest → CTC loss (optax.ctc_loss, blank = 0) per
recording, divided by its transcript's length, averaged. AdamW with linear warm-up
and cosine decay, gradient clipping.

`transcribe` gives greedy CTC transcripts of held-out recordings (the entry point reports their WER: how well
the features the units come from follow the words). The run is minutes long and not
checkpointed; the output directory is written only at the end (config.json last).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm import tqdm

from audiopalm.audio.io import list_audio_files
from audiopalm.files import storage
from audiopalm.semantic.fit import bucket_length, decode_all
from audiopalm.ssl import ctc_encoder as ctc_lib
from audiopalm.ssl import mfcc as mfcc_lib
from audiopalm.ssl.load import load_encoder

log = logging.getLogger(__name__)

SUMMARY_FILE = "train.json"
_FEATURE_BATCH = 64  # recordings per MFCC call while loading


@dataclasses.dataclass(frozen=True)
class CtcTrainConfig:
  """The CTC run.

  Attributes:
    steps: optimizer steps.
    batch_size: recordings per step.
    max_seconds: longer recordings are skipped (batches are padded to the longest recording drawn).
    learning_rate: peak AdamW learning rate, after `warmup_steps` of linear warm-up, then cosine decay to 5%.
    warmup_steps: of the learning rate.
    weight_decay: AdamW's decoupled weight decay.
    clip_norm: global gradient-norm clipping.
    log_every: steps between progress lines.
    seed: batches and initialisation.
  """

  steps: int = 1000
  batch_size: int = 32
  max_seconds: float = 20.0
  learning_rate: float = 2e-3
  warmup_steps: int = 100
  weight_decay: float = 0.01
  clip_norm: float = 1.0
  log_every: int = 100
  seed: int = 0

  def __post_init__(self):
    problems = []
    for name in ("steps", "batch_size", "log_every"):
      if getattr(self, name) < 1:
        problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
    for name in ("max_seconds", "learning_rate", "clip_norm"):
      if not getattr(self, name) > 0:
        problems.append(f"{name} must be > 0, got {getattr(self, name)}")
    if not 0 <= self.warmup_steps < self.steps:
      problems.append(f"warmup_steps must be in [0, steps={self.steps}), got {self.warmup_steps}")
    if problems:
      raise ValueError("invalid CtcTrainConfig: " + "; ".join(problems))


def read_transcripts(audio_paths: Sequence[str]) -> dict[str, str]:
  """{audio file: upper-cased transcript} of every LibriSpeech-layout recording under `audio_paths`."""
  files = list_audio_files(audio_paths)
  by_dir_id = {(os.path.dirname(f), os.path.splitext(os.path.basename(f))[0]): f for f in files}
  out = {}
  for directory in sorted({d for d, _ in by_dir_id}):
    for name in storage.listdir(directory):
      if not name.endswith(".trans.txt"):
        continue
      for line in storage.read_text(storage.join(directory, name)).splitlines():
        utt_id, _, text = line.strip().partition(" ")
        if (directory, utt_id) in by_dir_id and text.strip():
          out[by_dir_id[(directory, utt_id)]] = " ".join(text.upper().split())
  return out


def load_corpus(transcripts: dict[str, str], config: mfcc_lib.MfccConfig, max_seconds: float,
                failed: list[tuple[str, str]]) -> tuple[list[np.ndarray], list[str]]:
  """MFCC frames [T, dim] (float16) and the transcript of every decodable recording, in file order; the others
  are appended to `failed` with the reason."""
  files = sorted(transcripts)
  rate = config.sample_rate
  features, texts, pending = [], [], []

  def flush() -> None:
    batch = np.zeros((len(pending), bucket_length(max(len(w) for _, w in pending), rate)), np.float32)
    for i, (_, w) in enumerate(pending):
      batch[i, :len(w)] = w
    x, frames = mfcc_lib.mfcc(config, jnp.asarray(batch), jnp.asarray([len(w) for _, w in pending], jnp.int32))
    x, frames = np.asarray(x), np.asarray(frames)
    for i, (path, _) in enumerate(pending):
      text = transcripts[path]
      if frames[i] < len(text):  # CTC needs a frame per character at least (more with repeated characters)
        failed.append((path, f"transcript of {len(text)} characters longer than its {frames[i]} frames"))
        continue
      features.append(x[i, :frames[i]].astype(np.float16))
      texts.append(text)
    pending.clear()

  for path, wave in tqdm(decode_all(files, rate, failed), total=len(files), desc="audio", unit="file",
                         dynamic_ncols=True, mininterval=5):
    if len(wave) > max_seconds * rate:
      failed.append((path, f"longer than max_seconds={max_seconds}"))
      continue
    pending.append((path, wave))
    if len(pending) == _FEATURE_BATCH:
      flush()
  if pending:
    flush()
  return features, texts


def _batch(indices: Sequence[int], features: list[np.ndarray], labels: list[np.ndarray] | None,
           config: mfcc_lib.MfccConfig) -> dict[str, np.ndarray]:
  """Padded features [B, T, dim] (T: whole seconds × a power of two, so a few shapes compile), frames [B], and
  (with labels) labels [B, L] and their paddings [B, L]."""
  dim = config.dim
  width = bucket_length(max(len(features[i]) for i in indices), round(config.frame_rate))
  out = {"x": np.zeros((len(indices), width, dim), np.float32), "frames": np.zeros(len(indices), np.int32)}
  for b, i in enumerate(indices):
    out["x"][b, :len(features[i])] = features[i]
    out["frames"][b] = len(features[i])
  if labels is not None:
    size = bucket_length(max(len(labels[i]) for i in indices), 8)
    out["labels"] = np.zeros((len(indices), size), np.int32)
    out["label_paddings"] = np.ones((len(indices), size), np.float32)
    for b, i in enumerate(indices):
      out["labels"][b, :len(labels[i])] = labels[i]
      out["label_paddings"][b, :len(labels[i])] = 0.0
  return out


def greedy_decode(logits: np.ndarray, alphabet: str) -> str:
  """Best-path CTC decoding of one recording's logits [T, 1 + len(alphabet)]: repeats merged, blanks removed."""
  best = np.asarray(logits).argmax(-1)
  keep = (best != ctc_lib.BLANK) & np.concatenate([[True], best[1:] != best[:-1]])
  return " ".join("".join(alphabet[i - 1] for i in best[keep]).split())


def train_ctc_encoder(*, audio_paths: Sequence[str], output_dir: str,
                      encoder: ctc_lib.CtcEncoderConfig = ctc_lib.CtcEncoderConfig(),
                      config: CtcTrainConfig = CtcTrainConfig()) -> dict[str, Any]:
  """Trains the encoder from scratch on the transcribed recordings under `audio_paths` and writes it to
  `output_dir` (see the module docstring). `encoder.alphabet` is replaced by the transcripts' characters. Returns
  the summary that is also written to `<output_dir>/train.json`."""
  if storage.is_file(storage.join(output_dir, "config.json")):
    raise FileExistsError(f"{output_dir}/config.json exists: an encoder was already trained there (delete it or "
                          "choose another output_dir)")
  start = time.time()
  transcripts = read_transcripts(audio_paths)
  if not transcripts:
    raise ValueError(f"no transcribed recordings (LibriSpeech layout: *.trans.txt beside the audio) in "
                     f"{list(audio_paths)}")
  failed: list[tuple[str, str]] = []
  features, texts = load_corpus(transcripts, encoder.mfcc, config.max_seconds, failed)
  for path, reason in failed:
    log.warning("Skipping %s: %s", path, reason)
  if not features:
    raise ValueError(f"none of the {len(transcripts)} transcribed recordings could be used (first: {failed[0]})")
  encoder = dataclasses.replace(encoder, alphabet="".join(sorted({c for t in texts for c in t})))
  index = {c: i + 1 for i, c in enumerate(encoder.alphabet)}
  labels = [np.array([index[c] for c in t], np.int32) for t in texts]
  hours = sum(len(f) for f in features) / encoder.mfcc.frame_rate / 3600
  log.info("CTC training on %d recordings (%.2f h; %d skipped), alphabet %r, %.0f s to load", len(features), hours,
           len(failed), encoder.alphabet, time.time() - start)

  model = ctc_lib.CtcNetwork(encoder)
  rng = np.random.default_rng(config.seed)
  first = _batch(rng.integers(0, len(features), config.batch_size), features, labels, encoder.mfcc)
  params = model.init(jax.random.key(config.seed), first["x"], first["frames"], encoder.num_layers, True)["params"]
  schedule = optax.warmup_cosine_decay_schedule(0.0, config.learning_rate, config.warmup_steps, config.steps,
                                                config.learning_rate * 0.05)
  optimizer = optax.chain(optax.clip_by_global_norm(config.clip_norm),
                          optax.adamw(schedule, weight_decay=config.weight_decay))
  opt_state = optimizer.init(params)

  def loss_fn(params, batch):
    logits = model.apply({"params": params}, batch["x"], batch["frames"], encoder.num_layers, True)  # [B, T, V]
    paddings = (jnp.arange(logits.shape[1])[None, :] >= batch["frames"][:, None]).astype(jnp.float32)
    nll = optax.ctc_loss(logits, paddings, batch["labels"], batch["label_paddings"], blank_id=ctc_lib.BLANK)
    characters = jnp.sum(1.0 - batch["label_paddings"], axis=1)
    return jnp.mean(nll / characters)  # nats per character

  @jax.jit
  def train_step(params, opt_state, batch):
    loss, grads = jax.value_and_grad(loss_fn)(params, batch)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  history, losses = [], []
  train_start = time.time()
  with tqdm(total=config.steps, desc="ctc encoder", unit="step", dynamic_ncols=True, mininterval=5) as bar:
    for step in range(1, config.steps + 1):
      batch = first if step == 1 else _batch(rng.integers(0, len(features), config.batch_size), features, labels,
                                             encoder.mfcc)
      params, opt_state, loss = train_step(params, opt_state, batch)
      losses.append(loss)
      if step % config.log_every == 0 or step == config.steps:
        loss = float(np.mean(jax.device_get(losses)))
        losses = []
        if not math.isfinite(loss):
          raise FloatingPointError(f"CTC training diverged at step {step} (loss {loss}): lower learning_rate")
        history.append({"step": step, "loss_per_character": round(loss, 4)})
        log.info("step %d: CTC loss %.3f nats per character", step, loss)
        bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
      bar.update(1)

  summary: dict[str, Any] = {
      "audio_paths": list(audio_paths), "recordings": len(features), "audio_hours": round(hours, 4),
      "skipped": [list(f) for f in failed], "encoder": dataclasses.asdict(encoder),
      "config": dataclasses.asdict(config), "history": history, "train_seconds": round(time.time() - train_start, 1),
      "seconds": round(time.time() - start, 1)}
  storage.write_text(storage.join(output_dir, SUMMARY_FILE), json.dumps(summary, indent=2) + "\n")
  ctc_lib.save_ctc_encoder(output_dir, encoder, params)
  log.info("Wrote %s: CTC loss %.3f nats per character after %d steps (%.0f s)", output_dir,
           history[-1]["loss_per_character"], config.steps, summary["seconds"])
  return summary


def transcribe(encoder_dir: str, audio_paths: Sequence[str]) -> tuple[list[str], list[str]]:
  """(transcripts, greedy CTC transcripts) of the transcribed recordings under `audio_paths`, by the trained
  encoder in `encoder_dir` (its CTC head included); recordings that cannot be used are logged and left out."""
  encoder = load_encoder(encoder_dir)
  if not isinstance(encoder, ctc_lib.CtcEncoder):
    raise ValueError(f"{encoder_dir} holds a {encoder.name} encoder, not a CTC-trained one")
  config, params = encoder.config, encoder.params
  failed: list[tuple[str, str]] = []
  features, texts = load_corpus(read_transcripts(audio_paths), config.mfcc, math.inf, failed)
  for path, reason in failed:
    log.warning("Not transcribing %s: %s", path, reason)
  model = ctc_lib.CtcNetwork(config)
  apply = jax.jit(lambda p, x, f: model.apply({"params": p}, x, f, config.num_layers, True))
  hypotheses = []
  for s in range(0, len(features), _FEATURE_BATCH):
    indices = list(range(s, min(s + _FEATURE_BATCH, len(features))))
    batch = _batch(indices, features, None, config.mfcc)
    logits = np.asarray(apply(params, batch["x"], batch["frames"]))
    hypotheses += [greedy_decode(logits[b, :batch["frames"][b]], config.alphabet) for b in range(len(indices))]
  return texts, hypotheses
