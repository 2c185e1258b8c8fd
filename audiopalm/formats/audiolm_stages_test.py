"""AudioLM stage formats: golden layouts on a hand-made example, time alignment, crops, determinism, errors."""

import dataclasses
import functools

import numpy as np
import pytest

from audiopalm.formats import audiolm_stages as stages
from audiopalm.formats.base import get_format
from audiopalm.vocab.combined import CombinedVocabulary, load_text_vocab
from audiopalm.vocab.spec import make_spec

SEM, AC = "semantic-test", "codec-test"
EOS, PAD = 1, 258  # the byte vocabulary's EOS; '<delay_pad>', the first special after the 258 text ids


def _vocab(semantic=8, acoustic=4, levels=3, specials=("<delay_pad>",)):
  text = load_text_vocab("byte")
  spec = make_spec(text.spec, semantic=(semantic, SEM), acoustic=[(acoustic, AC)] * levels, specials=specials)
  return CombinedVocabulary(spec, text)


# The golden example: 0.16 s of audio. Semantic codes at 25 Hz (4 frames), acoustic codes at 50 Hz (8 frames x 3
# levels, codebook 4). In the vocabulary of `_vocab()` (checked below): semantic code c → 259 + c, acoustic level
# 0 code c → 267 + c, level 1 → 271 + c, level 2 → 275 + c.
SEMANTIC = [5, 5, 6, 6]
ACOUSTIC = [[0, 1, 2],   # ids 267 272 277
            [3, 0, 1],   # ids 270 271 276
            [2, 3, 0],   # ids 269 274 275
            [1, 2, 3],   # ids 268 273 278
            [0, 0, 1],   # ids 267 271 276
            [1, 1, 2],   # ids 268 272 277
            [2, 2, 3],   # ids 269 273 278
            [3, 3, 0]]   # ids 270 274 275


def _tiny():
  return {"id": "tiny", "semantic": np.array(SEMANTIC, np.int32), "acoustic": np.array(ACOUSTIC, np.int32),
          "semantic_frame_rate": 25.0, "acoustic_frame_rate": 50.0, "duration": 0.16,
          "semantic_tokenizer": SEM, "acoustic_tokenizer": AC}


def _run(fn, config, example=None, seed=0, vocab=None):
  seqs = list(fn(_tiny() if example is None else example, vocab or _vocab(), np.random.default_rng(seed), config))
  assert len(seqs) == 1
  return seqs[0]


def _check(seq, tokens, weights):
  assert seq.tokens.dtype == np.int32 and seq.weights.dtype == np.float32
  assert seq.tokens.tolist() == tokens
  assert seq.weights.tolist() == weights


def test_golden_vocabulary_layout():
  spec = _vocab().spec
  assert spec.special_id("<delay_pad>") == PAD and spec.text.eos_id == EOS
  assert (spec.semantic.offset, spec.semantic.end) == (259, 267)
  assert [(r.offset, r.end) for r in spec.acoustic] == [(267, 271), (271, 275), (275, 279)]


def test_semantic_lm_golden():
  _check(_run(stages.semantic_lm, stages.SemanticLMConfig(dedupe=False)),
         [264, 264, 265, 265, EOS], [1, 1, 1, 1, 1])
  _check(_run(stages.semantic_lm, stages.SemanticLMConfig(dedupe=True)),
         [264, 265, EOS], [1, 1, 1])


def test_coarse_acoustic_golden_flatten():
  coarse = [267, 272, 270, 271, 269, 274, 268, 273, 267, 271, 268, 272, 269, 273, 270, 274]  # levels 0-1 per frame
  _check(_run(stages.coarse_acoustic, stages.CoarseAcousticConfig(coarse_levels=2, dedupe=False)),
         [264, 264, 265, 265] + coarse + [EOS], [0] * 4 + [1] * 16 + [1])
  _check(_run(stages.coarse_acoustic, stages.CoarseAcousticConfig(coarse_levels=2, dedupe=True)),
         [264, 265] + coarse + [EOS], [0] * 2 + [1] * 16 + [1])


def test_coarse_acoustic_golden_delay():
  # Two levels: step s holds (level 0 of frame s, level 1 of frame s - 1); 9 steps.
  delayed = [267, PAD,
             270, 272,
             269, 271,
             268, 274,
             267, 273,
             268, 271,
             269, 272,
             270, 273,
             PAD, 274]
  _check(_run(stages.coarse_acoustic, stages.CoarseAcousticConfig(coarse_levels=2, dedupe=True, layout="delay")),
         [264, 265] + delayed + [EOS], [0] * 2 + [1] * 18 + [1])
  # Three levels: step s holds (level 0 of frame s, level 1 of frame s - 1, level 2 of frame s - 2); 10 steps.
  delayed = [267, PAD, PAD,
             270, 272, PAD,
             269, 271, 277,
             268, 274, 276,
             267, 273, 275,
             268, 271, 278,
             269, 272, 276,
             270, 273, 277,
             PAD, 274, 278,
             PAD, PAD, 275]
  _check(_run(stages.coarse_acoustic, stages.CoarseAcousticConfig(coarse_levels=3, dedupe=False, layout="delay")),
         [264, 264, 265, 265] + delayed + [EOS], [0] * 4 + [1] * 30 + [1])


def test_fine_acoustic_golden():
  # Coarse = levels 0-1 (conditioning), fine = level 2.
  coarse = [267, 272, 270, 271, 269, 274, 268, 273, 267, 271, 268, 272, 269, 273, 270, 274]
  fine = [277, 276, 275, 278, 276, 277, 278, 275]
  _check(_run(stages.fine_acoustic, stages.FineAcousticConfig(coarse_levels=2)),
         coarse + fine + [EOS], [0] * 16 + [1] * 8 + [1])
  # Coarse = level 0 (always flattened), fine = levels 1-2: flattened per frame, or delayed.
  coarse = [267, 270, 269, 268, 267, 268, 269, 270]
  fine = [272, 277, 271, 276, 274, 275, 273, 278, 271, 276, 272, 277, 273, 278, 274, 275]
  _check(_run(stages.fine_acoustic, stages.FineAcousticConfig(coarse_levels=1)),
         coarse + fine + [EOS], [0] * 8 + [1] * 16 + [1])
  delayed = [272, PAD,
             271, 277,
             274, 276,
             273, 275,
             271, 278,
             272, 276,
             273, 277,
             274, 278,
             PAD, 275]
  _check(_run(stages.fine_acoustic, stages.FineAcousticConfig(coarse_levels=1, layout="delay")),
         coarse + delayed + [EOS], [0] * 8 + [1] * 18 + [1])
  # num_levels=2 drops level 2: fine = level 1 only.
  _check(_run(stages.fine_acoustic, stages.FineAcousticConfig(coarse_levels=1, num_levels=2)),
         coarse + [272, 271, 274, 273, 271, 272, 273, 274] + [EOS], [0] * 8 + [1] * 8 + [1])


def test_coarse_acoustic_golden_streams():
  # Two levels, time-aligned: row r has the semantic token of acoustic frame r (25 Hz vs 50 Hz: each semantic
  # token beside two frames) in stream 0, level 0 of frame r - 1 in stream 1 and level 1 of frame r - 2 in
  # stream 2; 8 + 2 rows, no EOS, the semantic tokens not deduplicated.
  x = 0
  config = stages.CoarseAcousticConfig(coarse_levels=2, dedupe=False, layout="streams")
  seq = _run(stages.coarse_acoustic, config)
  assert seq.tokens.tolist() == [[264, x, x], [264, 267, x], [264, 270, 272], [264, 269, 271], [265, 268, 274],
                                 [265, 267, 273], [265, 268, 271], [265, 269, 272], [x, 270, 273], [x, x, 274]]
  assert seq.weights.tolist() == [[0, 0, 0], [0, 1, 0], [0, 1, 1], [0, 1, 1], [0, 1, 1], [0, 1, 1], [0, 1, 1],
                                  [0, 1, 1], [0, 1, 1], [0, 0, 1]]
  assert stages.stream_vocab(config, _vocab()) == ((259, 267), (267, 271), (271, 275))
  # Lookahead 2: every level 2 rows later, so level 0 of frame t comes after the semantic token of frame t + 3.
  ahead = _run(stages.coarse_acoustic, dataclasses.replace(config, semantic_lookahead=2))
  assert ahead.tokens.tolist() == [[264, x, x], [264, x, x], [264, x, x], [264, 267, x], [265, 270, 272],
                                   [265, 269, 271], [265, 268, 274], [265, 267, 273], [x, 268, 271], [x, 269, 272],
                                   [x, 270, 273], [x, x, 274]]
  assert ahead.weights.sum() == 16 and ahead.weights[:, 0].sum() == 0
  np.testing.assert_array_equal(stages.undo_fine_streams(ahead.tokens, 1, 8, delay=3),
                                stages.undo_fine_streams(seq.tokens, 1, 8))
  for bad in (dict(semantic_lookahead=-1), dict(semantic_lookahead=2, layout="flatten", dedupe=True)):
    with pytest.raises(ValueError, match="semantic_lookahead"):
      stages.CoarseAcousticConfig(**{**dataclasses.asdict(config), **bad})
  # Every trained cell holds an id of its stream's range.
  seq = _run(stages.coarse_acoustic, dataclasses.replace(config, coarse_levels=3))
  assert seq.tokens.shape == (8 + 3, 4) and seq.weights.sum() == 8 * 3
  for s, (start, end) in enumerate(stages.stream_vocab(dataclasses.replace(config, coarse_levels=3), _vocab())):
    trained = seq.tokens[seq.weights[:, s] > 0, s]
    assert ((trained >= start) & (trained < end)).all()
  np.testing.assert_array_equal(stages.frame_semantic([1, 2, 3], 1, 2, 6), [1, 1, 2, 2, 3, 3])
  np.testing.assert_array_equal(stages.frame_semantic([1, 2, 3, 4], 2, 3, 6), [1, 1, 2, 3, 3, 4])  # 50 Hz : 75 Hz
  with pytest.raises(ValueError, match="dedupe=False"):
    stages.CoarseAcousticConfig(layout="streams")


def test_fine_acoustic_golden_streams():
  # Coarse = level 0 (conditioning, weight 0), fine = levels 1-2: row r has level 0 of frame r, level 1 of frame
  # r - 1 and level 2 of frame r - 2; 8 + 2 rows, no EOS.
  x = 0
  seq = _run(stages.fine_acoustic, stages.FineAcousticConfig(coarse_levels=1, layout="streams"))
  assert seq.tokens.tolist() == [[267, x, x], [270, 272, x], [269, 271, 277], [268, 274, 276], [267, 273, 275],
                                 [268, 271, 278], [269, 272, 276], [270, 273, 277], [x, 274, 278], [x, x, 275]]
  assert seq.weights.tolist() == [[0, 0, 0], [0, 1, 0], [0, 1, 1], [0, 1, 1], [0, 1, 1], [0, 1, 1], [0, 1, 1],
                                  [0, 1, 1], [0, 1, 1], [0, 0, 1]]
  ids = _vocab().acoustic(np.array(ACOUSTIC), range(3))
  np.testing.assert_array_equal(stages.undo_fine_streams(seq.tokens, 1, 8), ids)
  assert stages.stream_vocab(stages.FineAcousticConfig(coarse_levels=1), _vocab()) == (
      (267, 271), (271, 275), (275, 279))
  assert stages.stream_vocab(stages.FineAcousticConfig(coarse_levels=1, num_levels=2), _vocab()) == (
      (267, 271), (271, 275))
  with pytest.raises(ValueError, match="no range for levels"):
    stages.stream_vocab(stages.FineAcousticConfig(coarse_levels=1, num_levels=5), _vocab())


def test_short_windows_golden():
  """Windows of 0.08 s: two semantic frames and the four acoustic frames of the same time, from a block offset."""
  config = stages.CoarseAcousticConfig(crop_seconds=0.08, coarse_levels=1, dedupe=False)
  expected = {(264, 264, 267, 270, 269, 268, EOS),   # semantic frames 0-1, acoustic frames 0-3
              (264, 265, 269, 268, 267, 268, EOS),   # semantic frames 1-2, acoustic frames 2-5
              (265, 265, 267, 268, 269, 270, EOS)}   # semantic frames 2-3, acoustic frames 4-7
  seen = set()
  for seed in range(40):
    seq = _run(stages.coarse_acoustic, config, seed=seed)
    assert tuple(seq.tokens.tolist()) in expected
    assert seq.weights.tolist() == [0, 0, 1, 1, 1, 1, 1]
    seen.add(tuple(seq.tokens.tolist()))
  assert seen == expected
  # Stage 1 crops of 0.08 s: any two consecutive semantic frames.
  seen = {tuple(_run(stages.semantic_lm, stages.SemanticLMConfig(crop_seconds=0.08, dedupe=False), seed=seed)
                .tokens.tolist()) for seed in range(40)}
  assert seen == {(264, 264, EOS), (264, 265, EOS), (265, 265, EOS)}
  # Stage 3 chunks of 0.06 s (3 frames), non-overlapping from frame 0: frames 0-2, 3-5, 6-7.
  seen = {tuple(_run(stages.fine_acoustic, stages.FineAcousticConfig(chunk_seconds=0.06, coarse_levels=2), seed=seed)
                .tokens.tolist()) for seed in range(40)}
  assert seen == {(267, 272, 270, 271, 269, 274, 277, 276, 275, EOS),
                  (268, 273, 267, 271, 268, 272, 278, 276, 277, EOS),
                  (269, 273, 270, 274, 278, 275, EOS)}


def _long(seconds, semantic_rate, acoustic_rate, levels, seed=0, timed=True, codebook=1024):
  """An example whose codes name their frame (timed: semantic code = frame, acoustic level q code = frame + q)."""
  t_s, t_a = round(seconds * semantic_rate), round(seconds * acoustic_rate)
  if timed:
    semantic = np.arange(t_s)
    acoustic = np.arange(t_a)[:, None] + np.arange(levels)[None, :]
  else:
    rng = np.random.default_rng(seed)
    semantic, acoustic = rng.integers(0, codebook, t_s), rng.integers(0, codebook, (t_a, levels))
  return {"id": "long", "semantic": semantic.astype(np.int32), "acoustic": acoustic.astype(np.int32),
          "semantic_frame_rate": float(semantic_rate), "acoustic_frame_rate": float(acoustic_rate)}


def _codes(seq, audio_range):
  tokens = seq.tokens
  return (tokens[(tokens >= audio_range.offset) & (tokens < audio_range.end)] - audio_range.offset).tolist()


@pytest.mark.parametrize("semantic_rate,acoustic_rate", [(25, 50), (25, 75), (50, 75)])
def test_coarse_windows_are_time_aligned(semantic_rate, acoustic_rate):
  vocab = _vocab(semantic=2048, acoustic=2048, levels=4)
  example = _long(14.0, semantic_rate, acoustic_rate, levels=4)
  config = stages.CoarseAcousticConfig(dedupe=False)
  starts = set()
  for seed in range(20):
    seq = _run(stages.coarse_acoustic, config, example, seed, vocab)
    sem, level0 = _codes(seq, vocab.spec.semantic), _codes(seq, vocab.spec.acoustic[0])
    assert sem == list(range(sem[0], sem[0] + len(sem))) and level0 == list(range(level0[0], level0[0] + len(level0)))
    assert len(sem) == 10 * semantic_rate and len(level0) == 10 * acoustic_rate  # a full 10 s window
    assert sem[0] * acoustic_rate == level0[0] * semantic_rate  # same start time
    for q in range(4):
      assert _codes(seq, vocab.spec.acoustic[q]) == [c + q for c in level0]
    starts.add(sem[0])
  assert len(starts) > 1  # the rng moves the window


def test_fine_chunks_do_not_overlap():
  vocab = _vocab(acoustic=1024, levels=6)
  example = _long(10.0, 25, 50, levels=6)  # 500 frames: chunks of 150 start at 0, 150, 300, 450 (50 frames)
  config = stages.FineAcousticConfig(coarse_levels=2)
  seen = {}
  for seed in range(60):
    level0 = _codes(_run(stages.fine_acoustic, config, example, seed, vocab), vocab.spec.acoustic[0])
    assert level0 == list(range(level0[0], level0[0] + len(level0)))
    seen[level0[0]] = len(level0)
  assert seen == {0: 150, 150: 150, 300: 150, 450: 50}


def test_determinism():
  vocab = _vocab(semantic=1024, acoustic=1024, levels=12)
  example = _long(40.0, 25, 50, levels=12, timed=False)
  for fn, config in [(stages.semantic_lm, stages.SemanticLMConfig()), (stages.coarse_acoustic,
                     stages.CoarseAcousticConfig(layout="delay")), (stages.fine_acoustic, stages.FineAcousticConfig())]:
    a, b = _run(fn, config, example, 7, vocab), _run(fn, config, example, 7, vocab)
    np.testing.assert_array_equal(a.tokens, b.tokens)
    np.testing.assert_array_equal(a.weights, b.weights)
    assert len({tuple(_run(fn, config, example, seed, vocab).tokens.tolist()) for seed in range(8)}) > 1


def test_lengths_within_limits():
  vocab = _vocab(semantic=1024, acoustic=1024, levels=12)
  for seed in range(5):
    example = _long(40.0 + seed * 0.37, 25, 50, levels=12, seed=seed, timed=False)
    for dedupe in (False, True):
      seq = _run(stages.semantic_lm, stages.SemanticLMConfig(dedupe=dedupe), example, seed, vocab)
      assert len(seq) <= 30 * 25 + 1 and (dedupe or len(seq) == 30 * 25 + 1)
      seq = _run(stages.coarse_acoustic, stages.CoarseAcousticConfig(dedupe=dedupe), example, seed, vocab)
      assert len(seq) <= 10 * (25 + 50 * 4) + 1 and (dedupe or len(seq) == 10 * (25 + 50 * 4) + 1)
      assert seq.weights.sum() == 10 * 50 * 4 + 1
    seq = _run(stages.coarse_acoustic, stages.CoarseAcousticConfig(layout="delay"), example, seed, vocab)
    assert len(seq) <= 10 * (25 + 50 * 4) + 1 + 3 * 4  # (L - 1)·L filler tokens
    seq = _run(stages.fine_acoustic, stages.FineAcousticConfig(), example, seed, vocab)
    assert len(seq) <= 3 * 50 * 12 + 1
    assert seq.weights.sum() <= 3 * 50 * 8 + 1
    seq = _run(stages.fine_acoustic, stages.FineAcousticConfig(layout="delay"), example, seed, vocab)
    assert len(seq) <= 3 * 50 * 12 + 1 + 7 * 8


def test_short_and_empty_examples():
  vocab = _vocab()
  empty = {**_tiny(), "semantic": np.zeros(0, np.int32), "acoustic": np.zeros((0, 3), np.int32)}
  rng = np.random.default_rng(0)
  assert not list(stages.semantic_lm(empty, vocab, rng, stages.SemanticLMConfig()))
  assert not list(stages.coarse_acoustic(empty, vocab, rng, stages.CoarseAcousticConfig(coarse_levels=2)))
  assert not list(stages.fine_acoustic(empty, vocab, rng, stages.FineAcousticConfig(coarse_levels=2)))
  # One acoustic frame more than the semantic frames cover: the partial block is left out.
  longer = {**_tiny(), "acoustic": np.array(ACOUSTIC + [[1, 1, 1]], np.int32)}
  seq = _run(stages.coarse_acoustic, stages.CoarseAcousticConfig(coarse_levels=1, dedupe=False), longer)
  assert seq.tokens.tolist() == [264, 264, 265, 265, 267, 270, 269, 268, 267, 268, 269, 270, EOS]


def test_registered_with_default_configs():
  vocab = _vocab(semantic=1024, acoustic=1024, levels=12)
  example = _long(40.0, 25, 50, levels=12, timed=False)
  for name, fn, config in [("semantic_lm", stages.semantic_lm, stages.SemanticLMConfig()),
                           ("coarse_acoustic", stages.coarse_acoustic, stages.CoarseAcousticConfig()),
                           ("fine_acoustic", stages.fine_acoustic, stages.FineAcousticConfig())]:
    registered = get_format(name)
    assert isinstance(registered, functools.partial) and registered.keywords == {"config": config}
    seq = next(registered(example, vocab, np.random.default_rng(3)))
    np.testing.assert_array_equal(seq.tokens, _run(fn, config, example, 3, vocab).tokens)
    assert seq.task == name and seq.tokens[-1] == vocab.spec.text.eos_id and seq.weights[-1] == 1
  assert stages.SemanticLMConfig().crop_seconds == 30 and stages.SemanticLMConfig().dedupe
  assert (stages.CoarseAcousticConfig().crop_seconds, stages.CoarseAcousticConfig().coarse_levels) == (10, 4)
  assert (stages.FineAcousticConfig().chunk_seconds, stages.FineAcousticConfig().coarse_levels) == (3, 4)


def test_delay_pattern_round_trip():
  ids = np.arange(15).reshape(5, 3)
  grid = stages.delay_pattern(ids, -1)
  assert grid.shape == (7, 3)
  assert grid[:, 2].tolist() == [-1, -1, 2, 5, 8, 11, 14]
  np.testing.assert_array_equal(stages.undo_delay_pattern(grid), ids)
  np.testing.assert_array_equal(stages.delay_pattern(ids[:, :1], -1), ids[:, :1])
  assert stages.dedupe_consecutive(np.array([5, 5, 6, 6, 5])).tolist() == [5, 6, 5]


def test_errors():
  no_pad = _vocab(specials=())
  with pytest.raises(ValueError, match="layout 'delay' needs the special token '<delay_pad>'"):
    _run(stages.coarse_acoustic, stages.CoarseAcousticConfig(coarse_levels=2, layout="delay"), vocab=no_pad)
  with pytest.raises(ValueError, match="layout 'delay' needs the special token '<delay_pad>'"):
    _run(stages.fine_acoustic, stages.FineAcousticConfig(coarse_levels=1, layout="delay"), vocab=no_pad)
  with pytest.raises(ValueError, match="coarse_levels=4 needs acoustic levels 0..3; the vocabulary has no range for "
                                       r"levels \[3\]"):
    _run(stages.coarse_acoustic, stages.CoarseAcousticConfig())
  with pytest.raises(ValueError, match="coarse_levels=4 needs acoustic levels 0..3; example 'tiny' has only 3"):
    _run(stages.coarse_acoustic, stages.CoarseAcousticConfig(), vocab=_vocab(levels=4))
  with pytest.raises(ValueError, match="leaves no fine levels: example 'tiny' has 3 acoustic levels"):
    _run(stages.fine_acoustic, stages.FineAcousticConfig())
  with pytest.raises(ValueError, match="num_levels=4 needs acoustic levels 0..3; example 'tiny' has only 3"):
    _run(stages.fine_acoustic, stages.FineAcousticConfig(coarse_levels=2, num_levels=4), vocab=_vocab(levels=4))
  with pytest.raises(ValueError, match=r"the vocabulary has no range for levels \[2\]"):
    _run(stages.fine_acoustic, stages.FineAcousticConfig(coarse_levels=1), vocab=_vocab(levels=2))
  text = load_text_vocab("byte")
  no_semantic = CombinedVocabulary(make_spec(text.spec, acoustic=[(4, AC)] * 3), text)
  with pytest.raises(ValueError, match="semantic_lm: the vocabulary has no semantic range"):
    _run(stages.semantic_lm, stages.SemanticLMConfig(), vocab=no_semantic)
  with pytest.raises(ValueError, match="has semantic tokens of 'other'"):
    _run(stages.semantic_lm, stages.SemanticLMConfig(), {**_tiny(), "semantic_tokenizer": "other"})
  with pytest.raises(ValueError, match="has acoustic tokens of 'other'"):
    _run(stages.fine_acoustic, stages.FineAcousticConfig(coarse_levels=1), {**_tiny(), "acoustic_tokenizer": "other"})
  with pytest.raises(ValueError, match="must exceed coarse_levels"):
    stages.FineAcousticConfig(coarse_levels=4, num_levels=4)
  with pytest.raises(ValueError, match="layout 'interleave'; choose one of"):
    stages.CoarseAcousticConfig(layout="interleave")
  with pytest.raises(ValueError, match="crop_seconds must be > 0"):
    stages.SemanticLMConfig(crop_seconds=0)
  with pytest.raises(ValueError, match="shorter than one aligned block"):
    _run(stages.coarse_acoustic, stages.CoarseAcousticConfig(crop_seconds=0.01, coarse_levels=1))
