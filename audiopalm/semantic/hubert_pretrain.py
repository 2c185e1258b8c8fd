"""HuBERT's next iteration: train a small HuBERT to predict a semantic tokenizer's units of masked frames.

    summary = pretrain_hubert(audio_paths=["runs/main/speech/train"], targets="audiopalm/data/assets/demo_semantic",
                              output_dir="runs/main/hubert", encoder=hubert.preset("tiny"),
                              config=HubertPretrainConfig(steps=1500))
    # → output_dir is a transformers HubertModel directory (hubert_export.save_hubert) + pretrain.json;
    #   fit_semantic_tokenizer(encoder_path=output_dir, layer=...) then gives the next iteration's units

HuBERT (Hsu et al. 2021) trains in iterations: k-means units of MFCCs are the first targets; the units of the
trained model's middle layer are the next ones, and each iteration's units carry more of the phonetic content
and less of the speaker. Here the targets are any semantic tokenizer's units (the embedded default's MFCC
k-means), at its rate, repeated to the encoder's 50 Hz frames (label of frame t = unit of t · token_rate /
frame_rate).

One step (the objective of the paper, with its defaults):
  random crops of `crop_seconds` from `batch_size` recordings (shorter ones whole, padded)
  → spans of `mask_length` frames masked, starts drawn with probability `mask_prob` (overlaps merge)
  → HubertNetwork with masked frames replaced by the learned mask embedding (transformers' masked_spec_embed)
  → final projection to `proj_dim`; logits = cosine(projection, unit embedding) / `temperature` over the K units
  → cross-entropy on masked valid frames (what the model must infer from context).

All audio is decoded and its targets computed once, up front (a corpus of a few hours: the embedded default's
2 h are 230 MB of int16); files that cannot be decoded are logged with the reason and skipped. The training run
is minutes long and not checkpointed: an interrupted run starts again; the output directory is written only at
the end (config.json last), so a directory with config.json is a finished encoder.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm import tqdm

from audiopalm.audio.io import list_audio_files
from audiopalm.files import storage
from audiopalm.semantic.fit import bucket_length, decode_all
from audiopalm.semantic.tokenizer import load_semantic_tokenizer
from audiopalm.ssl import hubert as hubert_lib
from audiopalm.ssl.hubert_export import save_hubert

log = logging.getLogger(__name__)

SUMMARY_FILE = "pretrain.json"


@dataclasses.dataclass(frozen=True)
class HubertPretrainConfig:
  """The masked-prediction run.

  Attributes:
    steps: optimizer steps.
    batch_size: recordings (crops) per step.
    crop_seconds: longer recordings are cropped at a random offset to this length.
    mask_prob: probability that a frame starts a masked span (HuBERT: 0.08; with spans of 10 about half the
      frames are masked).
    mask_length: frames per masked span.
    proj_dim: dimension of the projection compared with the unit embeddings.
    temperature: of the cosine-similarity logits.
    masked_weight: HuBERT's α: the loss is α · (masked frames' loss) + (1 − α) · (unmasked frames' loss); the
      paper's 1.0 learns only from context, lower values also teach the frame's own unit.
    learning_rate: peak Adam learning rate, after `warmup_steps` of linear warm-up, then linear decay to 0.
    warmup_steps: of the learning rate.
    weight_decay: AdamW's decoupled weight decay.
    clip_norm: global gradient-norm clipping.
    log_every: steps between progress lines.
    seed: crops, masks and initialisation.
  """

  steps: int = 1500
  batch_size: int = 32
  crop_seconds: float = 2.0
  mask_prob: float = 0.08
  mask_length: int = 10
  proj_dim: int = 64
  temperature: float = 0.1
  masked_weight: float = 1.0
  learning_rate: float = 2e-3
  warmup_steps: int = 100
  weight_decay: float = 0.01
  clip_norm: float = 1.0
  log_every: int = 50
  seed: int = 0

  def __post_init__(self):
    problems = []
    for name in ("steps", "batch_size", "mask_length", "proj_dim", "log_every"):
      if getattr(self, name) < 1:
        problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
    if not 0 < self.mask_prob < 1:
      problems.append(f"mask_prob must be in (0, 1), got {self.mask_prob}")
    for name in ("crop_seconds", "temperature", "learning_rate", "clip_norm"):
      if not getattr(self, name) > 0:
        problems.append(f"{name} must be > 0, got {getattr(self, name)}")
    if not 0 <= self.masked_weight <= 1:
      problems.append(f"masked_weight must be in [0, 1], got {self.masked_weight}")
    if not 0 <= self.warmup_steps < self.steps:
      problems.append(f"warmup_steps must be in [0, steps={self.steps}), got {self.warmup_steps}")
    if problems:
      raise ValueError("invalid HubertPretrainConfig: " + "; ".join(problems))


class HubertPretrainer(nn.Module):
  """HubertNetwork + the mask embedding + HuBERT's projection head over K unit embeddings."""

  encoder: hubert_lib.HubertConfig
  num_units: int
  proj_dim: int
  temperature: float

  @nn.compact
  def __call__(self, waveforms: jax.Array, lengths: jax.Array, time_mask: jax.Array
               ) -> tuple[jax.Array, jax.Array]:
    """[B, S], [B] samples, [B, T] bool → logits over the units [B, T, K], frames [B]."""
    cfg = self.encoder
    mask_embedding = self.param("masked_spec_embed", nn.initializers.uniform(1.0), (cfg.hidden_size,))
    hidden, frames = hubert_lib.HubertNetwork(cfg, "default", name="hubert")(
        waveforms, lengths, cfg.num_hidden_layers, True, time_mask, mask_embedding)  # [batch, frames, hidden]
    projected = nn.Dense(self.proj_dim, name="final_proj")(hidden)  # [batch, frames, proj]
    units = self.param("label_embeddings", nn.initializers.normal(1.0), (self.num_units, self.proj_dim))
    cosine = jnp.einsum("BTP,KP->BTK", _unit(projected), _unit(units))
    return cosine / self.temperature, frames


def _unit(x: jax.Array) -> jax.Array:
  return x * jax.lax.rsqrt(jnp.sum(jnp.square(x), axis=-1, keepdims=True) + 1e-8)


def span_mask(rng: np.random.Generator, frames: np.ndarray, width: int, prob: float, length: int) -> np.ndarray:
  """[B] valid frames → [B, width] bool: each valid frame starts a span of `length` with probability `prob`
  (at least one span per example with a frame; spans are cut at the example's end)."""
  mask = np.zeros((len(frames), width), bool)
  for b, n in enumerate(frames):
    if n <= 0:
      continue
    starts = np.flatnonzero(rng.random(n) < prob)
    if starts.size == 0:
      starts = rng.integers(0, n, 1)
    for s in starts:
      mask[b, s:min(s + length, n)] = True
  return mask


def load_corpus(files: Sequence[str], targets: Any, batch: int = 64) -> tuple[list[np.ndarray], list[np.ndarray],
                                                                             list[tuple[str, str]]]:
  """Every file decoded at the tokenizer's rate (int16 in memory) with its units; undecodable files skipped.

  Decoding is `fit.decode_all`'s (a few files ahead on threads, failures logged with the reason); the targets are
  computed in batches padded to `fit.bucket_length` of whole seconds, so the tokenizer compiles a few times."""
  rate = targets.sample_rate
  waves, units, failed = [], [], []
  pending: list[np.ndarray] = []

  def flush() -> None:
    batch_waves = np.zeros((len(pending), bucket_length(max(len(w) for w in pending), rate)), np.float32)
    for i, w in enumerate(pending):
      batch_waves[i, :len(w)] = w
    codes, counts = targets.encode(batch_waves, np.array([len(w) for w in pending], np.int32))
    codes, counts = np.asarray(codes)[..., 0], np.asarray(counts)
    for i, w in enumerate(pending):
      waves.append(np.round(np.clip(w, -1, 1) * 32767).astype(np.int16))
      units.append(codes[i, :counts[i]].astype(np.int32))
    pending.clear()

  decoded = decode_all(files, rate, failed)
  for path, wave in tqdm(decoded, total=len(files), desc="audio and targets", unit="file", dynamic_ncols=True,
                         mininterval=5):
    if len(wave) < rate // 10:
      failed.append((path, "shorter than 0.1 s"))
      continue
    pending.append(wave)
    if len(pending) == batch:
      flush()
  if pending:
    flush()
  return waves, units, failed


def _batch(rng: np.random.Generator, waves: list[np.ndarray], units: list[np.ndarray], cfg: HubertPretrainConfig,
           encoder: hubert_lib.HubertConfig, token_rate: float) -> dict[str, np.ndarray]:
  """Random crops [B, S] float32, lengths [B], labels [B, T] int32 and the span mask [B, T] (valid frames only)."""
  samples = round(cfg.crop_seconds * encoder.sample_rate)
  width = int(hubert_lib.conv_output_lengths(encoder, samples))
  out = {"waveforms": np.zeros((cfg.batch_size, samples), np.float32),
         "lengths": np.zeros(cfg.batch_size, np.int32), "labels": np.zeros((cfg.batch_size, width), np.int32)}
  for b, i in enumerate(rng.integers(0, len(waves), cfg.batch_size)):
    start = int(rng.integers(0, max(1, len(waves[i]) - samples + 1)))
    crop = waves[i][start:start + samples]
    out["waveforms"][b, :len(crop)] = crop / 32767.0
    out["lengths"][b] = len(crop)
    # Labels of the crop: the units from its start time on (start is a whole number of frames away from a unit
    # boundary only approximately; the label of frame t is the unit covering start + t frames).
    offset = start / encoder.hop_length
    index = np.floor((offset + np.arange(width)) * token_rate / encoder.frame_rate).astype(np.int64)
    out["labels"][b] = units[i][np.minimum(index, len(units[i]) - 1)]
  frames = hubert_lib.conv_output_lengths(encoder, out["lengths"])
  out["time_mask"] = span_mask(rng, frames, width, cfg.mask_prob, cfg.mask_length)
  return out


def pretrain_hubert(*, audio_paths: Sequence[str], targets: str, output_dir: str, encoder: hubert_lib.HubertConfig,
                    config: HubertPretrainConfig = HubertPretrainConfig()) -> dict[str, Any]:
  """Trains `encoder` from scratch on the audio to predict the units of the semantic tokenizer at `targets`, and
  writes it as a transformers HubertModel directory to `output_dir` (see the module docstring). Returns the
  summary that is also written to `<output_dir>/pretrain.json`."""
  if storage.is_file(storage.join(output_dir, "config.json")):
    raise FileExistsError(f"{output_dir}/config.json exists: an encoder was already trained there (delete it or "
                          "choose another output_dir)")
  start = time.time()
  tokenizer = load_semantic_tokenizer(targets)
  if tokenizer.sample_rate != encoder.sample_rate:
    raise ValueError(f"the targets' tokenizer reads {tokenizer.sample_rate} Hz audio but the encoder "
                     f"{encoder.sample_rate} Hz")
  files = list_audio_files(audio_paths)
  if not files:
    raise ValueError(f"no audio files in {list(audio_paths)}")
  waves, units, failed = load_corpus(files, tokenizer)
  if not waves:
    raise ValueError(f"none of the {len(files)} audio files could be decoded (first: {failed[0]})")
  hours = sum(len(w) for w in waves) / encoder.sample_rate / 3600
  log.info("HuBERT pre-training on %d recordings (%.2f h; %d skipped), targets %s (K=%d at %g Hz), %.0f s to load",
           len(waves), hours, len(failed), tokenizer.identity, tokenizer.vocab_size, tokenizer.frame_rate,
           time.time() - start)

  model = HubertPretrainer(encoder, tokenizer.vocab_size, config.proj_dim, config.temperature)
  rng = np.random.default_rng(config.seed)
  first = _batch(rng, waves, units, config, encoder, tokenizer.frame_rate)
  params = model.init(jax.random.key(config.seed), first["waveforms"], first["lengths"], first["time_mask"])["params"]
  schedule = optax.join_schedules([optax.linear_schedule(0.0, config.learning_rate, config.warmup_steps),
                                   optax.linear_schedule(config.learning_rate, 0.0,
                                                         config.steps - config.warmup_steps)], [config.warmup_steps])
  optimizer = optax.chain(optax.clip_by_global_norm(config.clip_norm),
                          optax.adamw(schedule, b2=0.98, eps=1e-6, weight_decay=config.weight_decay))
  opt_state = optimizer.init(params)

  def loss_fn(params, batch):
    logits, frames = model.apply({"params": params}, batch["waveforms"], batch["lengths"], batch["time_mask"])
    valid = jnp.arange(logits.shape[1])[None, :] < frames[:, None]  # [batch, frames]
    masked = (valid & batch["time_mask"]).astype(jnp.float32)
    unmasked = (valid & ~batch["time_mask"]).astype(jnp.float32)
    nll = optax.softmax_cross_entropy_with_integer_labels(logits, batch["labels"])  # [batch, frames]
    correct = (jnp.argmax(logits, -1) == batch["labels"]).astype(jnp.float32)
    mean = lambda x, w: jnp.sum(x * w) / jnp.maximum(jnp.sum(w), 1.0)  # noqa: E731
    loss = config.masked_weight * mean(nll, masked) + (1 - config.masked_weight) * mean(nll, unmasked)
    return loss, (mean(nll, masked), mean(correct, masked))

  @jax.jit
  def train_step(params, opt_state, batch):
    (_, (loss, accuracy)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss, accuracy

  history = []
  losses, accuracies = [], []
  train_start = time.time()
  with tqdm(total=config.steps, desc="hubert", unit="step", dynamic_ncols=True, mininterval=5) as bar:
    for step in range(1, config.steps + 1):
      batch = first if step == 1 else _batch(rng, waves, units, config, encoder, tokenizer.frame_rate)
      params, opt_state, loss, accuracy = train_step(params, opt_state, batch)
      losses.append(loss)
      accuracies.append(accuracy)
      if step % config.log_every == 0 or step == config.steps:
        loss, accuracy = float(np.mean(jax.device_get(losses))), float(np.mean(jax.device_get(accuracies)))
        losses, accuracies = [], []
        if not math.isfinite(loss):
          raise FloatingPointError(f"HuBERT pre-training diverged at step {step} (loss {loss}): lower learning_rate")
        history.append({"step": step, "masked_loss": round(loss, 4), "masked_accuracy": round(accuracy, 4)})
        log.info("step %d: masked loss %.3f (uniform %.3f), masked accuracy %.3f", step, loss,
                 math.log(tokenizer.vocab_size), accuracy)
        bar.set_postfix(loss=f"{loss:.3f}", acc=f"{accuracy:.3f}", refresh=False)
      bar.update(1)

  summary = {"targets": targets, "targets_identity": tokenizer.identity, "audio_paths": list(audio_paths),
             "recordings": len(waves), "audio_hours": round(hours, 4), "skipped": [list(f) for f in failed],
             "encoder": dataclasses.asdict(encoder), "config": dataclasses.asdict(config), "history": history,
             "train_seconds": round(time.time() - train_start, 1), "seconds": round(time.time() - start, 1)}
  storage.write_text(storage.join(output_dir, SUMMARY_FILE), json.dumps(summary, indent=2) + "\n")
  save_hubert(output_dir, encoder, jax.device_get(params["hubert"]), jax.device_get(params["masked_spec_embed"]))
  log.info("Wrote %s: masked loss %.3f, accuracy %.3f after %d steps (%.0f s)", output_dir,
           history[-1]["masked_loss"], history[-1]["masked_accuracy"], config.steps, summary["seconds"])
  return summary
