"""Resynthesize audio through a codec (encode → decode) and report bitrate, mel distance and SI-SNR.

    python -m tools.resynthesize --codec=PATH --input=in.flac --output=out.wav [--num_levels=N] \
        [--chunk_seconds=S] [--codes_out=codes.npy]
    python -m tools.resynthesize --codec=PATH --input=DIR [--input=more.flac ...] --output=OUT_DIR

`--codec` is a project codec checkpoint (`codec_config.json`) or a `transformers` EnCodec directory
(`config.json`), as `audiopalm.codec.checkpoint.load_codec` reads them. Each input is decoded and resampled
to the codec's rate, encoded with the first `--num_levels` RVQ levels (default: all), decoded, trimmed to
the input length and written as 16-bit PCM at the codec's rate.

One `--input` file gives one `--output` file and a report of the duration, codec rate and frame rate,
levels, bitrate, number of codes, and the mel distance (`spectral.mel_distance`, lower is better) and
SI-SNR (dB, higher is better) between input and resynthesis. Several inputs, or a directory (searched
recursively for audio files), make `--output` a directory: one `.wav` per input under the same relative
name (a file named on the command line keeps its base name), and a summary table. A file that cannot be
decoded is reported and skipped; the exit status is non-zero if any input failed.

`--chunk_seconds` encodes with `Codec.encode_chunked` (same codes as encoding whole, memory bounded by the
chunk) and decodes chunk by chunk, each chunk preceded by at least the decoder's convolutional receptive
field of earlier frames (and `--decode_context_seconds`). Without an LSTM in the decoder this equals
decoding whole; with one (EnCodec) the LSTM restarts at each chunk's context, so the audio differs
slightly near chunk boundaries. The mel distance is averaged over segments of at most 60 s (weighted by
frames; exact for shorter files). Without `--chunk_seconds`, inputs are zero-padded to whole seconds
(codes and audio within the input length are unchanged: the codec is causal and masks the padding), so
files of similar lengths share one compilation.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import os
import sys
from typing import Sequence

import jax
import numpy as np

from audiopalm.audio.io import INPUT_SUFFIXES, AudioDecodeError, collect_inputs, load_audio, write_audio
from audiopalm.codec import checkpoint
from audiopalm.codec import model as codec_model
from audiopalm.codec import spectral
from audiopalm.codec.config import CodecConfig

METRIC_SEGMENT_SECONDS = 60.0
MEL_HOP = 256  # spectral.mel_distance's default hop: one frame per MEL_HOP samples counts


@dataclasses.dataclass
class Result:
  """What happened to one input."""

  input: str
  output: str
  seconds: float = 0.0
  frames: int = 0
  levels: int = 0
  mel_distance: float = math.nan
  si_snr_db: float = math.nan
  error: str | None = None


def decoder_context_frames(config: CodecConfig) -> int:
  """Frames of earlier codes a decoded sample can depend on through the decoder's convolutions.

  Counted in samples at the output rate, conservatively (a causal transposed conv with kernel 2·s and
  stride s reaches 2 input steps back), then rounded up to frames. The LSTM (if any) is not counted: its
  memory is unbounded.
  """
  step = config.hop_length  # output samples per step at the current layer
  samples = (config.first_kernel_size - 1) * step
  residual = sum((config.residual_kernel_size - 1) * d for d in config.dilations)
  for stride in reversed(config.strides):
    samples += 2 * step
    step //= stride
    samples += residual * step
  samples += config.decoder_last_kernel_size - 1
  return -(-samples // config.hop_length) + 1


def chunk_frames(config: CodecConfig, chunk_seconds: float) -> int:
  """Frames per chunk, as `Codec.encode_chunked` rounds `chunk_seconds`."""
  return max(codec_model.min_stream_frames(config), round(chunk_seconds * config.sample_rate / config.hop_length))


def decode_chunked(codec: codec_model.Codec, codes: np.ndarray, frames_per_chunk: int,
                   context_frames: int) -> np.ndarray:
  """codes [T, L] → audio [T · hop], decoding `frames_per_chunk` frames at a time after `context_frames`.

  Every call decodes a window of context + chunk frames (one compiled shape); the window's first chunk
  starts at frame 0 and the frames it holds past the chunk cannot change it (the decoder is causal).
  """
  total, hop = codes.shape[0], codec.config.hop_length
  window = context_frames + frames_per_chunk
  pieces = []
  for start in range(0, total, frames_per_chunk):
    end = min(start + frames_per_chunk, total)
    first = max(0, start - context_frames)
    part = codes[first:first + window]
    valid = part.shape[0]
    part = np.pad(part, ((0, window - valid), (0, 0)), constant_values=codec_model.PAD_CODE)
    audio, _ = codec.decode(part[None], np.array([valid], np.int32))
    pieces.append(np.asarray(audio[0, (start - first) * hop:(end - first) * hop]))
  return np.concatenate(pieces) if pieces else np.zeros((0,), np.float32)


@functools.partial(jax.jit, static_argnames=("sample_rate",))
def _mel_distance(ref: jax.Array, est: jax.Array, lengths: jax.Array, sample_rate: int) -> jax.Array:
  return spectral.mel_distance(ref, est, sample_rate, hop=MEL_HOP, lengths=lengths)


_si_snr = jax.jit(spectral.si_snr)


def metrics(ref: np.ndarray, est: np.ndarray, length: int, sample_rate: int) -> tuple[float, float]:
  """(mel distance, SI-SNR dB) of est vs ref over their first `length` samples (both [S], S ≥ length).

  The mel distance runs on segments of at most METRIC_SEGMENT_SECONDS (one compiled shape per segment
  length) and is averaged weighted by each segment's valid frames.
  """
  segment = min(len(ref), max(MEL_HOP * 8, int(METRIC_SEGMENT_SECONDS * sample_rate)))
  padded = -(-len(ref) // segment) * segment
  ref_p = np.pad(ref, (0, padded - len(ref))).reshape(-1, segment)
  est_p = np.pad(est, (0, padded - len(est))).reshape(-1, segment)
  seg_lengths = np.clip(length - segment * np.arange(ref_p.shape[0]), 0, segment).astype(np.int32)
  keep = seg_lengths > 0
  ref_p, est_p, seg_lengths = ref_p[keep], est_p[keep], seg_lengths[keep]
  mel = np.asarray(_mel_distance(ref_p, est_p, seg_lengths, sample_rate))
  weights = -(-seg_lengths // MEL_HOP)  # frames centred on a valid sample
  mel_distance = float(np.sum(mel * weights) / np.sum(weights))
  snr = float(_si_snr(ref[None], est[None], np.array([length], np.int32))[0])
  return mel_distance, snr


def resynthesize(codec: codec_model.Codec, waveform: np.ndarray, num_levels: int | None,
                 chunk_seconds: float | None, context_seconds: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
  """waveform [S] at the codec's rate → (codes [T, L] int32, resynthesis [S] float32)."""
  cfg = codec.config
  length, hop = len(waveform), cfg.hop_length
  if chunk_seconds is not None:
    codes, _ = codec.encode_chunked(waveform[None], np.array([length]), chunk_seconds, num_levels)
    codes = codes[0]
    context = max(decoder_context_frames(cfg), math.ceil(context_seconds * cfg.frame_rate))
    audio = decode_chunked(codec, codes, chunk_frames(cfg, chunk_seconds), context)
  else:
    bucket = hop * math.ceil(cfg.sample_rate / hop)  # about one second, a whole number of frames
    padded = np.pad(waveform, (0, -length % bucket))[None]
    codes, code_lengths = codec.encode(padded, np.array([length], np.int32), num_levels)
    audio, _ = codec.decode(codes, code_lengths)
    codes = np.asarray(codes[0, :int(code_lengths[0])])
    audio = np.asarray(audio[0])
  return codes.astype(np.int32), np.asarray(audio[:length], np.float32)


def process(codec: codec_model.Codec, input_path: str, output_path: str, *, num_levels: int | None,
            chunk_seconds: float | None, context_seconds: float, codes_out: str | None) -> Result:
  """Resynthesize one file; a file that cannot be decoded gives a Result with `error` set."""
  result = Result(input=input_path, output=output_path)
  try:
    waveform = load_audio(input_path, codec.sample_rate)
    if not len(waveform):
      raise AudioDecodeError(input_path, "no samples")
  except AudioDecodeError as e:
    result.error = str(e)
    return result
  codes, audio = resynthesize(codec, waveform, num_levels, chunk_seconds, context_seconds)
  write_audio(output_path, audio, codec.sample_rate)
  if codes_out:
    os.makedirs(os.path.dirname(os.path.abspath(codes_out)), exist_ok=True)
    np.save(codes_out, codes)
  result.seconds = len(waveform) / codec.sample_rate
  result.frames, result.levels = codes.shape
  written = np.clip(audio, -1.0, 1.0)  # what the file holds
  result.mel_distance, result.si_snr_db = metrics(waveform, written, len(waveform), codec.sample_rate)
  return result


def codec_summary(codec: codec_model.Codec, num_levels: int | None) -> list[str]:
  cfg = codec.config
  levels = num_levels or cfg.num_quantizers
  return [f"codec: sample rate {cfg.sample_rate} Hz, frame rate {cfg.frame_rate:g} Hz (hop {cfg.hop_length})",
          f"levels: {levels} of {cfg.num_quantizers} x {cfg.codebook_size} codes; bitrate "
          f"{cfg.bitrate(levels) / 1000:.3g} kbps"]


def _fmt(x: float, spec: str) -> str:
  return "n/a" if math.isnan(x) else format(x, spec)


def format_table(results: Sequence[Result]) -> str:
  """A Markdown table: one row per input."""
  lines = ["| input | seconds | frames | codes | mel distance | SI-SNR (dB) | status |",
           "|---|---|---|---|---|---|---|"]
  for r in results:
    status = f"FAILED: {r.error}" if r.error else f"ok -> {r.output}"
    lines.append(f"| {r.input} | {r.seconds:.2f} | {r.frames} | {r.frames * r.levels} | "
                 f"{_fmt(r.mel_distance, '.4f')} | {_fmt(r.si_snr_db, '.2f')} | {status} |")
  return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  p = argparse.ArgumentParser(prog="python -m tools.resynthesize", description=__doc__.split("\n\n")[0])
  p.add_argument("--codec", required=True, help="codec checkpoint dir or transformers EnCodec dir")
  p.add_argument("--input", required=True, nargs="+", action="extend",
                 help="audio file(s) or directories (repeatable)")
  p.add_argument("--output", required=True,
                 help="output file (one input file) or directory (several inputs or a directory)")
  p.add_argument("--num_levels", type=int, default=None, help="RVQ levels to keep (default: all)")
  p.add_argument("--chunk_seconds", type=float, default=None,
                 help="encode and decode in chunks of about this many seconds (long files)")
  p.add_argument("--decode_context_seconds", type=float, default=1.0,
                 help="with --chunk_seconds: earlier audio each decoded chunk is preceded by (at least the "
                      "decoder's receptive field)")
  p.add_argument("--codes_out", default=None,
                 help="save the codes [frames, levels] int32 as .npy (a directory when there are several inputs)")
  return p.parse_args(argv)


def _error(msg: str) -> int:
  print(f"error: {msg}", file=sys.stderr)
  return 2


def main(argv: Sequence[str] | None = None) -> int:
  """Runs the tool; returns the exit status (0 ok, 1 some input failed, 2 bad arguments or codec)."""
  args = parse_args(argv)
  if args.chunk_seconds is not None and args.chunk_seconds <= 0:
    return _error(f"--chunk_seconds must be positive, got {args.chunk_seconds}")
  try:
    codec = checkpoint.load_codec(args.codec)
  except (OSError, ValueError, KeyError) as e:
    return _error(f"cannot load --codec={args.codec}: {e}")
  if args.num_levels is not None and not 1 <= args.num_levels <= codec.config.num_quantizers:
    return _error(f"--num_levels must be in 1..{codec.config.num_quantizers}, got {args.num_levels}")
  options = dict(num_levels=args.num_levels, chunk_seconds=args.chunk_seconds,
                 context_seconds=args.decode_context_seconds)

  single = len(args.input) == 1 and not os.path.isdir(args.input[0]) and not os.path.isdir(args.output)
  if single:
    r = process(codec, args.input[0], args.output, codes_out=args.codes_out, **options)
    if r.error:
      print(f"error: {r.error}", file=sys.stderr)
      return 1
    levels = r.levels
    print(f"input: {r.input} ({r.seconds:.2f} s)")
    print("\n".join(codec_summary(codec, levels)))
    print(f"codes: {r.frames} frames x {levels} levels = {r.frames * levels} codes")
    print(f"mel distance: {r.mel_distance:.4f}")
    print(f"SI-SNR: {r.si_snr_db:.2f} dB")
    print(f"wrote {r.output}" + (f" and {args.codes_out}" if args.codes_out else ""))
    return 0

  inputs = collect_inputs(args.input)
  if not inputs:
    return _error(f"no audio files ({', '.join(INPUT_SUFFIXES)}) in {args.input}")
  names = [os.path.splitext(rel)[0] for _, rel in inputs]
  duplicates = sorted({n for n in names if names.count(n) > 1})
  if duplicates:
    return _error(f"several inputs would write the same output: {duplicates[:5]}")
  print("\n".join(codec_summary(codec, args.num_levels)), flush=True)
  results = []
  for (path, _), name in zip(inputs, names):
    codes_out = os.path.join(args.codes_out, name + ".npy") if args.codes_out else None
    r = process(codec, path, os.path.join(args.output, name + ".wav"), codes_out=codes_out, **options)
    print(f"{'FAILED' if r.error else 'ok'}: {path}" + (f": {r.error}" if r.error else ""), file=sys.stderr,
          flush=True)
    results.append(r)
  print(format_table(results))
  failed = sum(r.error is not None for r in results)
  good = [r for r in results if r.error is None]
  if good:
    seconds = sum(r.seconds for r in good)
    mel = sum(r.mel_distance * r.seconds for r in good) / seconds
    print(f"{len(good)} resynthesized ({seconds:.2f} s; duration-weighted mean mel distance {mel:.4f}), "
          f"{failed} failed")
  else:
    print(f"0 resynthesized, {failed} failed")
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
