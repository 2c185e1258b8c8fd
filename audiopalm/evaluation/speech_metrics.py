"""What the models can do with speech, measured on held-out token-shard examples.

    examples = read_examples("runs/tokens_demo_test", "test")          # parsed token-shard examples
    asr(speech, examples)              # WER / CER of transcripts decoded from the examples' semantic tokens
    tts(speech, examples, ...)         # round-trip WER: synthesize the transcripts, transcribe them back
    codec_resynthesis(codec, examples) # mel distance / SI-SNR of the examples' acoustic codes, decoded
    intelligibility(recognizer, examples, codec)  # an independent recognizer on the originals and the codec's copy
    semantic_resynthesis(...)          # WER of audio made from the examples' real semantic tokens

Every function returns a flat dict of numbers (plus the first `samples` (reference, hypothesis) pairs for
reading; None: all), so the results go to JSON and TensorBoard as they are. Text is normalised before scoring
(`evaluation.wer.normalize`).

`chance_wer` / `chance_cer` (in `asr`): the error rates of answering each utterance with another utterance's
transcript (the references rotated by one). For a corpus of templated sentences this is the floor a model that
learned the template but not the audio would reach; "far better than chance" means well below it.

Round trips (`tts`, `semantic_resynthesis`): with the acoustic stages and the semantic tokenizer, the audio is
really synthesized and tokenized again (`*_wer` from waveforms); `tts` also reports the shortcut that
transcribes the generated semantic tokens directly (`semantic_roundtrip_*`), which needs no acoustic models.

Intelligibility by an independent judge (`evaluation.recognizer`: an off-the-shelf recognizer this project does
not train): `tts` with a recognizer scores the synthesized audio (`recognizer_wer`), `intelligibility` the
original recordings and the codec's resynthesis of them with the same judge; the ratio of the first to the
original recordings' WER says how much intelligibility synthesis loses, whatever the judge's own accuracy.
"""

from __future__ import annotations

import json
import math
from typing import Any, Sequence

import jax
import numpy as np

from audiopalm.audio.io import AudioDecodeError, load_audio, resample, write_audio
from audiopalm.codec import spectral
from audiopalm.codec.model import Codec
from audiopalm.data.token_source import TokenShardSource
from audiopalm.evaluation.recognizer import SAMPLE_RATE, Recognizer
from audiopalm.evaluation.wer import error_rates
from audiopalm.files import storage
from audiopalm.inference.acoustic import AcousticStages, VoicePrompt, decode_codes
from audiopalm.inference.audio_tokens import tokenize
from audiopalm.inference.speech import SpeechTasks
from audiopalm.semantic.unit_aligner import UnitAligner
from audiopalm.tokenizers.base import AudioTokenizer

SAMPLES = 5  # (reference, hypothesis) pairs kept per metric for reading, by default

_mel = jax.jit(spectral.mel_distance, static_argnames=("sample_rate",))
_si_snr = jax.jit(spectral.si_snr)


def read_examples(tokens_dir: str, split: str, max_examples: int | None = None,
                  transcribed: bool = True) -> list[dict[str, Any]]:
  """The split's examples in dataset order (only those with a non-empty transcript if `transcribed`)."""
  source = TokenShardSource(tokens_dir, split=split)
  out = []
  for i in range(len(source)):
    example = source[i]
    if transcribed and not example.get("transcript"):
      continue
    out.append(example)
    if max_examples is not None and len(out) >= max_examples:
      break
  if not out:
    raise ValueError(f"{tokens_dir} split {split!r}: no{' transcribed' if transcribed else ''} examples")
  return out


def _rates(prefix: str, refs: Sequence[str], hyps: Sequence[str]) -> dict[str, float]:
  rates = error_rates(refs, hyps)
  return {f"{prefix}wer": rates.wer, f"{prefix}cer": rates.cer}


def _samples(refs: Sequence[str], hyps: Sequence[str], n: int | None) -> list[dict[str, str]]:
  """The first `n` (reference, hypothesis) pairs; None: all of them."""
  return [{"reference": r, "hypothesis": h} for r, h in list(zip(refs, hyps))[:n]]


def asr(speech: SpeechTasks, examples: Sequence[dict[str, Any]], samples: int | None = SAMPLES) -> dict[str, Any]:
  """Transcribes every example's semantic tokens: WER, CER and the chance baseline (module docstring)."""
  refs = [e["transcript"] for e in examples]
  hyps = speech.transcribe([e["semantic"] for e in examples], [e.get("language") for e in examples])
  result: dict[str, Any] = {"utterances": len(refs), **_rates("", refs, hyps)}
  if len(refs) > 1:
    result.update(_rates("chance_", refs, refs[1:] + refs[:1]))
  result["samples"] = _samples(refs, hyps, samples)
  return result


def _transcribe_waves(speech: SpeechTasks, semantic_tokenizer: AudioTokenizer, waves: Sequence[np.ndarray],
                      rate: int, languages: Sequence[str | None]) -> list[str]:
  """Waveforms at `rate` (the codec's) → resampled to the semantic tokenizer's rate, tokenized, transcribed."""
  waves = [resample(w, rate, semantic_tokenizer.sample_rate) for w in waves]
  codes = [c[:, 0] for c in tokenize(semantic_tokenizer, waves)]
  return speech.transcribe(codes, list(languages))


def tts(speech: SpeechTasks, examples: Sequence[dict[str, Any]], stages: AcousticStages | None = None,
        semantic_tokenizer: AudioTokenizer | None = None, samples: int | None = SAMPLES,
        prompt: VoicePrompt | None = None, recognizer: Recognizer | None = None,
        samples_dir: str | None = None, unit_reader: UnitAligner | None = None) -> dict[str, Any]:
  """Synthesizes every transcript and transcribes the result with the same model (module docstring).

  With `unit_reader` (a semantic tokenizer whose units read as characters), also the WER of what the synthesized
  units say by themselves (`units_wer`; `units_reference_wer` the same for the examples' real units): TTS judged
  without the acoustic stages and without the model's own ASR.

  With the stages, through audio (voiced like `prompt`, if given); then `recognizer` (an independent one) also
  transcribes the audio (`recognizer_wer`), and `samples_dir` gets every waveform (`<i>.wav`) and a line per
  utterance in `generated.jsonl` (text, wav, seconds, semantic tokens, the recognizer's and the model's
  transcripts)."""
  refs = [e["transcript"] for e in examples]
  languages = [e.get("language") for e in examples]
  codes = speech.synthesize(refs, languages)
  back = speech.transcribe(codes, languages)
  lengths = np.array([c.size for c in codes], np.float64)
  truth = np.array([np.size(e["semantic"]) for e in examples], np.float64)
  result: dict[str, Any] = {"utterances": len(refs), **_rates("semantic_roundtrip_", refs, back),
                            "empty_outputs": int((lengths == 0).sum()),
                            "length_ratio": float(lengths.sum() / truth.sum())}
  if unit_reader is not None:
    result.update(_rates("units_", refs, [unit_reader.transcribe(c) for c in codes]))
    result.update(_rates("units_reference_", refs, [unit_reader.transcribe(e["semantic"]) for e in examples]))
  if stages is None or semantic_tokenizer is None:
    result["samples"] = _samples(refs, back, samples)
    return result
  rate = stages.codec.sample_rate
  waves = stages.synthesize(codes, prompt)
  heard = _transcribe_waves(speech, semantic_tokenizer, waves, rate, languages)
  result.update(_rates("", refs, heard))
  result["samples"] = _samples(refs, heard, samples)
  judged = recognizer.transcribe(waves, rate) if recognizer is not None else None
  if judged is not None:
    result.update(_rates("recognizer_", refs, judged))
    result["recognizer_samples"] = _samples(refs, judged, samples)
  if samples_dir is not None:
    records = []
    for i, (ref, wave, c, model_heard) in enumerate(zip(refs, waves, codes, heard)):
      path = storage.join(samples_dir, f"{i:04d}.wav")
      write_audio(path, wave, rate)
      records.append({"text": ref, "wav": path, "seconds": round(wave.size / rate, 3), "semantic_tokens": int(c.size),
                      "source": examples[i].get("source"), "model_transcript": model_heard,
                      **({"recognizer_transcript": judged[i]} if judged is not None else {})})
    storage.write_text(storage.join(samples_dir, "generated.jsonl"),
                       "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    result["samples_dir"] = samples_dir
  return result


def intelligibility(recognizer: Recognizer, examples: Sequence[dict[str, Any]], codec: Codec | None = None,
                    num_levels: int | None = None, samples: int | None = SAMPLES) -> dict[str, Any]:
  """The independent recognizer's WER / CER on the examples' original recordings (`original_*`) and, with the
  codec, on the codec's resynthesis of their acoustic codes (first `num_levels`; `codec_*`): the yardsticks of
  `tts`'s `recognizer_wer`. Examples whose source audio cannot be read here are left out of both."""
  rate = SAMPLE_RATE
  kept = [(e, _original_audio(e, rate)) for e in examples]
  kept = [(e, wave) for e, wave in kept if wave is not None]
  if not kept:
    raise ValueError(f"intelligibility: none of the {len(examples)} examples' source audio could be read")
  refs = [e["transcript"] for e, _ in kept]
  heard = recognizer.transcribe([wave for _, wave in kept], rate)
  result: dict[str, Any] = {"recognizer": recognizer.describe(), "utterances": len(kept),
                            "missing_audio": len(examples) - len(kept), **_rates("original_", refs, heard),
                            "original_samples": _samples(refs, heard, samples)}
  if codec is not None:
    waves = [decode_codes(codec, np.asarray(e["acoustic"])[:, :num_levels]) for e, _ in kept]
    coded = recognizer.transcribe(waves, codec.sample_rate)
    result.update(_rates("codec_", refs, coded))
    result["codec_samples"] = _samples(refs, coded, samples)
  return result


def _original_audio(example: dict[str, Any], sample_rate: int) -> np.ndarray | None:
  """The example's segment of its source recording, or None when it cannot be read here."""
  try:
    start = float(example.get("start") or 0.0)
    return load_audio(example["source"], sample_rate, start=start, end=start + float(example["duration"]))
  except (AudioDecodeError, ValueError, OSError, KeyError):
    return None


def codec_resynthesis(codec: Codec, examples: Sequence[dict[str, Any]], num_levels: int | None = None
                      ) -> dict[str, Any]:
  """Decodes each example's acoustic codes (first `num_levels`) and compares with its source audio: mean mel
  distance (lower is better) and SI-SNR in dB (higher is better), weighted by duration."""
  mel, snr, seconds, missing = 0.0, 0.0, 0.0, 0
  rate, second = codec.sample_rate, codec.sample_rate  # metrics on whole seconds: one compilation per length
  for example in examples:
    ref = _original_audio(example, rate)
    codes = np.asarray(example["acoustic"])[:, :num_levels]
    if ref is None or not codes.size:
      missing += 1
      continue
    est = decode_codes(codec, codes)
    n = min(ref.size, est.size)
    width = -(-n // second) * second
    ref, est = (np.pad(x[:n], (0, width - n))[None] for x in (ref, est))  # [1, width], zero past n
    lengths = np.array([n], np.int32)
    mel += n / rate * float(_mel(ref, est, sample_rate=rate, lengths=lengths)[0])
    snr += n / rate * float(_si_snr(ref, est, lengths)[0])
    seconds += n / rate
  if not seconds:
    raise ValueError(f"codec resynthesis: none of the {len(examples)} examples' source audio could be read")
  return {"utterances": len(examples) - missing, "missing_audio": missing, "seconds": seconds,
          "mel_distance": mel / seconds, "si_snr_db": snr / seconds}


def semantic_resynthesis(speech: SpeechTasks, stages: AcousticStages, semantic_tokenizer: AudioTokenizer,
                         examples: Sequence[dict[str, Any]], samples: int | None = SAMPLES,
                         prompt: VoicePrompt | None = None, recognizer: Recognizer | None = None) -> dict[str, Any]:
  """Audio from the examples' real semantic tokens (coarse → fine → codec, voiced like `prompt` if given),
  tokenized and transcribed again: the intelligibility of the acoustic stages (AudioLM's resynthesis WER), and the
  same ASR on the original tokens for comparison (`reference_wer`); with `recognizer`, also its WER on that audio
  (`recognizer_wer`): the acoustic stages' share of `tts`'s `recognizer_wer`."""
  refs = [e["transcript"] for e in examples]
  languages = [e.get("language") for e in examples]
  waves = stages.synthesize([np.asarray(e["semantic"]) for e in examples], prompt)
  heard = _transcribe_waves(speech, semantic_tokenizer, waves, stages.codec.sample_rate, languages)
  original = speech.transcribe([e["semantic"] for e in examples], languages)
  result = {"utterances": len(refs), **_rates("", refs, heard), **_rates("reference_", refs, original),
            "samples": _samples(refs, heard, samples)}
  if recognizer is not None:
    judged = recognizer.transcribe(waves, stages.codec.sample_rate)
    result.update(_rates("recognizer_", refs, judged))
    result["recognizer_samples"] = _samples(refs, judged, samples)
  return result


def flatten(results: dict[str, Any], prefix: str = "") -> dict[str, float]:
  """Nested results → {"asr/wer": 0.3, ...}: the finite numbers only (for TensorBoard)."""
  out: dict[str, float] = {}
  for key, value in results.items():
    name = f"{prefix}{key}"
    if isinstance(value, dict):
      out.update(flatten(value, name + "/"))
    elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
      out[name] = float(value)
  return out
