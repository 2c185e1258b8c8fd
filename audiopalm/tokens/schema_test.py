"""Tests of token examples: round trips, validation, the tokenizer specs and the encoding choice."""

import numpy as np
import pytest
import tensorflow as tf

from audiopalm.tokens import schema


def make_info(num_codebooks: int = 8, vocab: int = 1024) -> schema.TokensInfo:
  return schema.TokensInfo(
      semantic=schema.TokenizerSpec("semantic", "gs://b/sem", "semantic-test-25hz-k512", 512, 1, 25.0, 16000,
                                    {"layer": 6}),
      acoustic=schema.TokenizerSpec("codec", "/codec", f"codec-test-q{num_codebooks}", vocab, num_codebooks, 50.0,
                                    16000, {"num_levels": num_codebooks}))


def make_segment(i: int, frames: int, num_codebooks: int = 8, transcript: str | None = "hello",
                 seed: int = 0) -> schema.TokenizedSegment:
  rng = np.random.default_rng(seed + i)
  return schema.TokenizedSegment(
      id=f"utt{i}_0001", utterance_id=f"utt{i}", segment_index=1, source=f"gs://corpus/a{i}.tar#x/{i}.flac",
      start=12.25, duration=frames / 50.0, transcript=transcript, language="English", speaker=f"spk{i}",
      semantic=rng.integers(0, 512, frames // 2),  # [T_s]
      acoustic=rng.integers(0, 1024, (frames, num_codebooks)))  # [T_a, Q]


def assert_same(parsed: dict, seg: schema.TokenizedSegment, info: schema.TokensInfo) -> None:
  for key in ("id", "utterance_id", "segment_index", "source", "transcript", "language", "speaker"):
    assert parsed[key] == getattr(seg, key), key
  assert parsed["start"] == pytest.approx(seg.start, abs=1e-6)
  assert parsed["duration"] == pytest.approx(seg.duration, abs=1e-6)
  assert parsed["has_transcript"] == (seg.transcript is not None)
  assert parsed["semantic"].dtype == np.int32 and parsed["acoustic"].dtype == np.int32
  np.testing.assert_array_equal(parsed["semantic"], seg.semantic)
  assert parsed["acoustic"].shape == np.shape(seg.acoustic)
  np.testing.assert_array_equal(parsed["acoustic"], seg.acoustic)
  assert parsed["semantic_tokenizer"] == info.semantic.identity
  assert parsed["acoustic_tokenizer"] == info.acoustic.identity
  assert parsed["semantic_frame_rate"] == 25.0 and parsed["acoustic_frame_rate"] == 50.0


@pytest.mark.parametrize("num_codebooks", [1, 8])
@pytest.mark.parametrize("transcript", [None, "", "héllo wörld"])
@pytest.mark.parametrize("frames", [0, 1, 37])
def test_example_round_trip(num_codebooks, transcript, frames):
  info = make_info(num_codebooks)
  seg = make_segment(3, frames, num_codebooks, transcript)
  serialized = schema.to_example(seg, info)
  assert_same(schema.parse_example(serialized), seg, info)
  back = schema.parse_segment(serialized)
  assert back.transcript == transcript and back.acoustic.shape == (frames, num_codebooks)

  for q in (None, num_codebooks):  # the tf.io parse, flat (reshaped by acoustic_shape) or with a static Q
    ex = {k: v.numpy() for k, v in schema.parse_tf(tf.constant(serialized), q).items()}
    np.testing.assert_array_equal(ex["semantic"], seg.semantic)
    np.testing.assert_array_equal(ex["acoustic"], np.reshape(seg.acoustic, (frames, num_codebooks)))
    assert ex["acoustic"].dtype == np.int32
    assert ex["transcript"] == (transcript or "").encode() and ex["has_transcript"] == (transcript is not None)


def test_unknown_language_and_speaker_are_none():
  seg = make_segment(0, 4)
  seg = schema.TokenizedSegment(**{**seg.__dict__, "language": None, "speaker": None})
  parsed = schema.parse_example(schema.to_example(seg, make_info()))
  assert parsed["language"] is None and parsed["speaker"] is None


def test_word_alignments_round_trip_and_are_optional():
  info = make_info()
  seg = schema.TokenizedSegment(**{**make_segment(0, 40, transcript="hello big world").__dict__,
                                   "alignments": np.array([[0.0, 0.2], [0.28, 0.4], [0.44, 0.8]])})
  serialized = schema.to_example(seg, info)
  np.testing.assert_allclose(schema.parse_example(serialized)["alignments"], seg.alignments, atol=1e-6)
  np.testing.assert_allclose(schema.parse_segment(serialized).alignments, seg.alignments, atol=1e-6)
  np.testing.assert_allclose(schema.parse_tf(tf.constant(serialized))["alignments"].numpy(),
                             seg.alignments.reshape(-1), atol=1e-6)
  # Unknown: written empty, read as None; a shard written before the feature existed reads the same.
  plain = schema.to_example(make_segment(0, 40), info)
  assert schema.parse_example(plain)["alignments"] is None
  old = tf.train.Example.FromString(plain)
  del old.features.feature["alignments"]
  assert schema.parse_example(old.SerializeToString())["alignments"] is None
  assert schema.parse_tf(tf.constant(old.SerializeToString()))["alignments"].numpy().size == 0
  for bad in (np.array([[0.0, 0.2]]), np.array([[0.0, 0.2], [0.5, 0.4], [0.5, 0.6]]),
              np.array([[0.0, np.nan], [0.3, 0.4], [0.5, 0.6]])):
    with pytest.raises(ValueError, match="one finite"):
      schema.to_example(schema.TokenizedSegment(**{**seg.__dict__, "alignments": bad}), info)


@pytest.mark.parametrize("change, match", [
    (dict(acoustic=np.full((3, 8), -1)), "padding"),
    (dict(acoustic=np.full((3, 8), 1024)), r"\[0, 1024\)"),
    (dict(semantic=np.array([0, 512])), r"\[0, 512\)"),
    (dict(acoustic=np.zeros((3, 4), np.int32)), "4 codebooks"),
    (dict(acoustic=np.zeros(3, np.int32)), "2 dims"),
    (dict(semantic=np.zeros((3, 2), np.int32)), "1 dims"),
    (dict(semantic=np.array([0.5, 1.0])), "integers"),
    (dict(duration=float("nan")), "finite"),
])
def test_to_example_refuses_bad_segments(change, match):
  seg = schema.TokenizedSegment(**{**make_segment(0, 4).__dict__, **change})
  with pytest.raises(ValueError, match=match):
    schema.to_example(seg, make_info())


def test_tokenizer_spec_json_round_trip_and_from_tokenizer():
  info = make_info()
  assert schema.TokensInfo.from_json(info.to_json()) == info

  class Fake:
    kind, identity, vocab_size, num_codebooks, frame_rate, sample_rate = "semantic", "s-1", 256, 1, 25, 16000

  spec = schema.TokenizerSpec.from_tokenizer(Fake(), "/p")
  assert (spec.kind, spec.identity, spec.frame_rate, spec.config) == ("semantic", "s-1", 25.0, {})
  with pytest.raises(TypeError, match="JSON serializable"):
    schema.TokenizerSpec("codec", "/p", "c", 2, 1, 50.0, 16000, {"x": object()})
  with pytest.raises(ValueError, match="one codebook"):
    schema.TokensInfo(semantic=info.acoustic, acoustic=info.acoustic)


def test_varints_are_smaller_than_uint16_for_small_codebooks():
  """The encoding choice: packed int64 varints vs raw uint16 bytes, per second of audio (demo-sized codes)."""
  rng = np.random.default_rng(0)
  semantic, acoustic = rng.integers(0, 256, 250), rng.integers(0, 256, (500, 8))  # 10 s: 25 Hz, 50 Hz x 8

  def size(feature):
    return len(tf.train.Example(features=tf.train.Features(feature={"x": feature})).SerializeToString())

  varint = size(schema._ints(semantic)) + size(schema._ints(acoustic.ravel()))  # pylint: disable=protected-access
  raw = sum(size(tf.train.Feature(bytes_list=tf.train.BytesList(value=[a.astype("<u2").tobytes()])))
            for a in (semantic, acoustic))
  assert varint / 10 < 700 < 850 < raw / 10  # ≈ 1.5 bytes per code vs 2
