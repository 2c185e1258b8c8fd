"""Inspect a token dataset: its metadata, per-shard statistics, code usage; decode one example to audio.

    python -m tools.inspect_tokens --dir=OUTPUT_DIR [--split=train] [--shard=N]
    python -m tools.inspect_tokens --dir=OUTPUT_DIR --decode_id=ID [--codec=PATH] --out=x.wav

Prints the dataset's metadata.json (tokenizers, vocabulary sizes, frame rates, totals, rejects from
stats.json), then reads the shards (all of them, or shard N of the split) and prints, per shard: examples,
hours, semantic tokens and acoustic frames (and per second of audio, to compare with the frame rates),
distinct semantic codes, and the acoustic codebook usage per level (distinct codes / vocabulary; perplexity
= exp(entropy) of the code histogram); a shard whose counts differ from metadata.json is flagged. Without
metadata.json (a job still running) it reads whatever complete shards the directory holds.

`--decode_id` finds the example with that id (in the selected shards) and decodes its acoustic tokens with
the codec (`--codec`, default: the acoustic tokenizer's path in metadata.json) into a 16-bit WAV at the
codec's rate, `round(duration · sample_rate)` samples long. The codec must be the one that made the tokens
(same identity, computed from its weights and the number of levels): `--allow_codec_mismatch` decodes anyway.
Exit status: 0 ok, 1 the id is not found or cannot be decoded, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from typing import Any, Sequence, TextIO

import numpy as np

from audiopalm.files import storage
from audiopalm.tokens import dataset_info, shards


@dataclasses.dataclass
class ShardReport:
  """What one shard holds, counted by reading it."""

  name: str
  examples: int = 0
  seconds: float = 0.0
  semantic_tokens: int = 0
  acoustic_frames: int = 0
  semantic_counts: np.ndarray | None = None  # [V_s] code histogram
  acoustic_counts: np.ndarray | None = None  # [Q, V_a] code histogram per level
  expected: shards.ShardStats | None = None  # what metadata.json says

  def add(self, ex: dict[str, Any], semantic_vocab: int | None, acoustic_vocab: int | None) -> None:
    self.examples += 1
    self.seconds += ex["duration"]
    semantic, acoustic = ex["semantic"], ex["acoustic"]  # [T_s], [T_a, Q]
    self.semantic_tokens += semantic.size
    self.acoustic_frames += acoustic.shape[0]
    self.semantic_counts = _merge(self.semantic_counts, _histogram(semantic[None], semantic_vocab)[0])
    self.acoustic_counts = _merge(self.acoustic_counts, _histogram(acoustic.T, acoustic_vocab))

  @property
  def mismatch(self) -> str | None:
    e = self.expected
    if e is None:
      return None
    if (self.examples, self.semantic_tokens, self.acoustic_frames) != (e.examples, e.semantic_tokens,
                                                                       e.acoustic_frames):
      return (f"metadata.json says {e.examples} examples, {e.semantic_tokens} semantic tokens, {e.acoustic_frames} "
              f"acoustic frames; the file has {self.examples}, {self.semantic_tokens}, {self.acoustic_frames}")
    return None


def _histogram(codes: np.ndarray, vocab: int | None) -> np.ndarray:
  """codes [L, T] → counts [L, V] per row (V: the vocabulary, or past the largest code when unknown)."""
  size = max(vocab or 0, int(codes.max()) + 1 if codes.size else 0)
  return np.stack([np.bincount(row, minlength=size) for row in codes]).astype(np.int64)


def _merge(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
  """The sum of two histograms [..., V] of possibly different V (None: nothing counted)."""
  if a is None or b is None:
    return b if a is None else a
  size = max(a.shape[-1], b.shape[-1])

  def pad(x: np.ndarray) -> np.ndarray:
    return np.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, size - x.shape[-1])])

  return pad(a) + pad(b)


def usage(counts: np.ndarray | None) -> tuple[int, float]:
  """(distinct codes, perplexity = exp(entropy)) of a histogram [V]."""
  if counts is None or counts.sum() == 0:
    return 0, 0.0
  p = counts[counts > 0] / counts.sum()
  return int(np.count_nonzero(counts)), float(np.exp(-(p * np.log(p)).sum()))


def shard_report(path: str, meta: dataset_info.DatasetMetadata | None) -> ShardReport:
  """Reads one shard file and counts what it holds."""
  semantic_vocab = meta.tokens.semantic.vocab_size if meta else None
  acoustic_vocab = meta.tokens.acoustic.vocab_size if meta else None
  report = ShardReport(name=os.path.basename(path))
  if meta is not None:
    report.expected = next((s for s in meta.shards if s.filename == report.name), None)
  for ex in shards.read_shard(path):
    report.add(ex, semantic_vocab, acoustic_vocab)
  return report


def _per_second(count: int, seconds: float) -> str:
  return f"{count / seconds:.2f}" if seconds > 0 else "n/a"


def _levels(counts: np.ndarray | None, vocab: int | None) -> str:
  if counts is None:
    return "n/a"
  return " ".join(f"{usage(row)[0]}" for row in counts) + (f" / {vocab}" if vocab else "")


def format_metadata(meta: dataset_info.DatasetMetadata, stats: dict[str, Any] | None) -> str:
  lines = [f"dataset: {meta.dataset_name} (format {meta.format_version}); splits {meta.splits}"]
  for role, spec in (("semantic", meta.tokens.semantic), ("acoustic", meta.tokens.acoustic)):
    lines.append(f"{role}: {spec.kind} {spec.identity} from {spec.path}: {spec.num_codebooks} x {spec.vocab_size} "
                 f"codes at {spec.frame_rate:g} Hz (input {spec.sample_rate} Hz)")
  t = meta.totals
  lines.append(f"totals: {t.examples} examples in {t.num_shards} shards, {t.hours:.4f} h, {t.semantic_tokens} "
               f"semantic tokens, {t.acoustic_frames} acoustic frames ({t.acoustic_tokens} tokens), "
               f"{t.transcribed} transcribed, {t.num_bytes} bytes"
               + (f" ({t.num_bytes / t.seconds:.0f} B/s of audio)" if t.seconds > 0 else ""))
  if stats is not None:
    rejects = stats.get("rejects", {})
    by_reason = ", ".join(f"{k} {v}" for k, v in rejects.get("by_reason", {}).items()) or "none"
    lines.append(f"rejects: {rejects.get('total', 0)} ({by_reason})")
  return "\n".join(lines)


def format_reports(reports: Sequence[ShardReport], meta: dataset_info.DatasetMetadata | None) -> str:
  """A Markdown table (one row per shard, then the total) and the codebook usage of the total."""
  semantic_vocab = meta.tokens.semantic.vocab_size if meta else None
  acoustic_vocab = meta.tokens.acoustic.vocab_size if meta else None
  total = ShardReport(name="total")
  for r in reports:
    total.examples += r.examples
    total.seconds += r.seconds
    total.semantic_tokens += r.semantic_tokens
    total.acoustic_frames += r.acoustic_frames
    total.semantic_counts = _merge(total.semantic_counts, r.semantic_counts)
    total.acoustic_counts = _merge(total.acoustic_counts, r.acoustic_counts)
  lines = ["| shard | examples | hours | semantic tokens | per s | acoustic frames | per s | semantic distinct | "
           "acoustic distinct per level | note |", "|---|---|---|---|---|---|---|---|---|---|"]
  for r in [*reports, total]:
    lines.append(f"| {r.name} | {r.examples} | {r.seconds / 3600:.4f} | {r.semantic_tokens} | "
                 f"{_per_second(r.semantic_tokens, r.seconds)} | {r.acoustic_frames} | "
                 f"{_per_second(r.acoustic_frames, r.seconds)} | {usage(r.semantic_counts)[0]}"
                 f"{f' / {semantic_vocab}' if semantic_vocab else ''} | {_levels(r.acoustic_counts, acoustic_vocab)} | "
                 f"{('MISMATCH: ' + r.mismatch) if r.mismatch else ''} |")
  distinct, perplexity = usage(total.semantic_counts)
  lines.append(f"semantic codes: {distinct} distinct, perplexity {perplexity:.1f}")
  if total.acoustic_counts is not None:
    for level, row in enumerate(total.acoustic_counts):
      distinct, perplexity = usage(row)
      lines.append(f"acoustic level {level}: {distinct} distinct, perplexity {perplexity:.1f}")
  return "\n".join(lines)


def select_shards(directory: str, meta: dataset_info.DatasetMetadata | None, split: str | None,
                  shard: int | None) -> list[str]:
  """The shard files to read: those metadata.json lists (else those on disk), of `split`, or only `shard`."""
  if meta is not None:
    listed = [(s.split, s.shard_index, os.path.join(directory, s.filename)) for s in meta.shards]
  else:
    listed = [(s.split, s.shard_index, s.path) for s in shards.find_shards(directory)]
  chosen = [(sp, i, p) for sp, i, p in listed if (split is None or sp == split) and (shard is None or i == shard)]
  if shard is not None and len({sp for sp, _, _ in chosen}) > 1:
    raise ValueError(f"shard {shard} exists in several splits {sorted({sp for sp, _, _ in chosen})}: pass --split")
  return [p for _, _, p in chosen]


def find_example(paths: Sequence[str], example_id: str) -> dict[str, Any] | None:
  for path in paths:
    for ex in shards.read_shard(path):
      if ex["id"] == example_id:
        return ex
  return None


def decode_example(codec: Any, ex: dict[str, Any]) -> np.ndarray:
  """An example's acoustic tokens [T_a, Q] → waveform [round(duration · sample_rate)] at the codec's rate."""
  codes = ex["acoustic"]  # [T_a, Q]
  if codes.shape[0] == 0:
    raise ValueError(f"example {ex['id']!r} has no acoustic frames")
  audio, _ = codec.decode(codes[None], np.array([codes.shape[0]], np.int32))  # [1, T_a · hop]
  audio = np.asarray(audio[0], np.float32)
  return audio[:min(len(audio), round(ex["duration"] * codec.config.sample_rate))]


def inspect(*, directory: str, split: str | None = None, shard: int | None = None, decode_id: str | None = None,
            codec_path: str | None = None, out: str | None = None, allow_codec_mismatch: bool = False,
            file: TextIO | None = None) -> int:
  """Prints the report (to `file`, default stdout); decodes `decode_id` to `out` if given. Returns the exit status."""
  file = sys.stdout if file is None else file
  meta_path = storage.join(directory, dataset_info.METADATA_FILE)
  meta = stats = None
  if storage.is_file(meta_path):
    meta = dataset_info.read_metadata(directory)
    stats_path = storage.join(directory, dataset_info.STATS_FILE)
    stats = dataset_info.read_stats(directory) if storage.is_file(stats_path) else None
    print(format_metadata(meta, stats), file=file)
  else:
    print(f"{meta_path} does not exist (yet): reading the complete shards on disk", file=file)
  try:
    paths = select_shards(directory, meta, split, shard)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  if not paths:
    print(f"error: no shards in {directory}" + (f" for split {split}" if split else "")
          + (f" with index {shard}" if shard is not None else ""), file=sys.stderr)
    return 2
  print(format_reports([shard_report(p, meta) for p in paths], meta), file=file, flush=True)
  if decode_id is None:
    return 0
  return _decode(directory=directory, meta=meta, paths=paths, decode_id=decode_id, codec_path=codec_path, out=out,
                 allow_codec_mismatch=allow_codec_mismatch, file=file)


def _decode(*, directory: str, meta: dataset_info.DatasetMetadata | None, paths: Sequence[str], decode_id: str,
            codec_path: str | None, out: str | None, allow_codec_mismatch: bool, file: TextIO) -> int:
  # Imported here: the report alone needs no JAX.
  from audiopalm.audio.io import write_audio  # pylint: disable=import-outside-toplevel
  from audiopalm.codec.checkpoint import load_codec  # pylint: disable=import-outside-toplevel
  from audiopalm.codec.tokenizer import CodecTokenizer  # pylint: disable=import-outside-toplevel

  if out is None:
    print("error: --decode_id needs --out", file=sys.stderr)
    return 2
  if codec_path is None:
    if meta is None or meta.tokens.acoustic.kind != "codec":
      print("error: --decode_id needs --codec (metadata.json names no codec)", file=sys.stderr)
      return 2
    codec_path = meta.tokens.acoustic.path
  ex = find_example(paths, decode_id)
  if ex is None:
    print(f"error: no example {decode_id!r} in {len(paths)} shard(s) of {directory}", file=sys.stderr)
    return 1
  try:
    codec = load_codec(codec_path)
  except (OSError, ValueError, KeyError) as e:
    print(f"error: cannot load --codec={codec_path}: {e}", file=sys.stderr)
    return 2
  levels = ex["acoustic"].shape[1]
  if not 1 <= levels <= codec.config.num_quantizers:
    print(f"error: the example has {levels} levels; the codec at {codec_path} has {codec.config.num_quantizers}",
          file=sys.stderr)
    return 1
  identity = CodecTokenizer(codec, num_levels=levels).identity
  if identity != ex["acoustic_tokenizer"]:
    message = (f"the codec at {codec_path} is {identity}; the tokens were made by {ex['acoustic_tokenizer']}")
    if not allow_codec_mismatch:
      print(f"error: {message} (--allow_codec_mismatch decodes anyway)", file=sys.stderr)
      return 1
    print(f"warning: {message}", file=sys.stderr)
  try:
    audio = decode_example(codec, ex)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  write_audio(out, audio, codec.config.sample_rate)
  seconds = len(audio) / codec.config.sample_rate
  transcript = "(no transcript)" if ex["transcript"] is None else repr(ex["transcript"])
  print(f"decoded {decode_id} ({ex['acoustic'].shape[0]} frames x {levels} levels, {seconds:.3f} s) from "
        f"{ex['source']} @ {ex['start']:.3f} s, {transcript}: wrote {out}", file=file)
  return 0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  p = argparse.ArgumentParser(prog="python -m tools.inspect_tokens", description=__doc__.split("\n\n")[0])
  p.add_argument("--dir", required=True, help="the token dataset directory (local or gs://)")
  p.add_argument("--split", default=None, help="only this split (default: all)")
  p.add_argument("--shard", type=int, default=None, help="only this shard index")
  p.add_argument("--decode_id", default=None, help="decode this example's acoustic tokens to --out")
  p.add_argument("--codec", default=None, help="codec checkpoint (default: the acoustic tokenizer's path)")
  p.add_argument("--out", default=None, help="WAV file for --decode_id")
  p.add_argument("--allow_codec_mismatch", action="store_true",
                 help="decode with a codec whose identity differs from the tokens' tokenizer")
  return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
  args = parse_args(argv)
  if args.shard is not None and args.shard < 0:
    print(f"error: --shard must be >= 0, got {args.shard}", file=sys.stderr)
    return 2
  return inspect(directory=args.dir, split=args.split, shard=args.shard, decode_id=args.decode_id,
                 codec_path=args.codec, out=args.out, allow_codec_mismatch=args.allow_codec_mismatch)


if __name__ == "__main__":
  sys.exit(main())
