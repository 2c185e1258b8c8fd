"""Golden token layouts of the AudioPaLM task formats on a tiny hand-made example.

The byte text vocabulary: 0 pad, 1 EOS, byte b at b + 2 ('H' 72 → 74, 'I' → 75, ' ' → 34, '[' → 93, ']' → 95).
Semantic range of 16 codes right after the 258 text ids: code c at 258 + c (3 → 261, 5 → 263, 7 → 265, 9 → 267).
The expected arrays below are written out from that layout by hand, not computed by the code under test.
"""

import dataclasses

import numpy as np
import pytest

from audiopalm.formats import audiopalm_tasks as tasks
from audiopalm.formats.base import format_names, get_format
from audiopalm.vocab.combined import CombinedVocabulary, Span, load_text_vocab
from audiopalm.vocab.spec import make_spec

EOS = 1
# Tags as byte ids (ord(c) + 2), each ending with its single space (34).
ASR_EN = [93, 67, 85, 84, 34, 71, 112, 105, 110, 107, 117, 106, 95, 34]  # "[ASR English] "
TTS_EN = [93, 86, 86, 85, 34, 71, 112, 105, 110, 107, 117, 106, 95, 34]  # "[TTS English] "
AST_EN_FR = [93, 67, 85, 86, 34, 71, 112, 105, 110, 107, 117, 106, 34, 72, 116, 103, 112, 101, 106, 95,
             34]  # "[AST English French] "
S2ST_EN_FR = [93, 85, 52, 85, 86, 34, 71, 112, 105, 110, 107, 117, 106, 34, 72, 116, 103, 112, 101, 106, 95,
              34]  # "[S2ST English French] "
ASR_AST_S2ST_EN_FR = [93, 67, 85, 84, 34, 67, 85, 86, 34, 85, 52, 85, 86, 34, 71, 112, 105, 110, 107, 117, 106, 34,
                      72, 116, 103, 112, 101, 106, 95, 34]  # "[ASR AST S2ST English French] "
ASR_AST_EN_FR = [93, 67, 85, 84, 34, 67, 85, 86, 34, 71, 112, 105, 110, 107, 117, 106, 34, 72, 116, 103, 112, 101,
                 106, 95, 34]  # "[ASR AST English French] "
CONTINUE_EN = [93, 69, 113, 112, 118, 107, 112, 119, 103, 34, 71, 112, 105, 110, 107, 117, 106, 95,
               34]  # "[Continue English] "
HI = [74, 75]
YOU = [91, 81, 87]
ALL = [67, 78, 78]
OUI = [81, 87, 75]
BAR = [34, 126, 34]  # " | "
AUDIO = [261, 261, 265]  # semantic [3, 3, 7]


def _vocab() -> CombinedVocabulary:
  text = load_text_vocab("byte")
  return CombinedVocabulary(make_spec(text.spec, semantic=(16, "sem-test")), text)


def _example(**changes) -> dict:
  """transcript "HI", semantic [3, 3, 7] at 1 frame per second, English."""
  ex = {"id": "utt-1", "transcript": "HI", "language": "English", "speaker": "s1",
        "semantic": np.array([3, 3, 7], np.int32), "acoustic": np.zeros((6, 2), np.int32),
        "semantic_frame_rate": 1.0, "acoustic_frame_rate": 2.0, "start": 0.0, "duration": 3.0}
  ex.update(changes)
  return ex


def _translated(**changes) -> dict:
  fields = {"translation_text": "OUI", "translation_language": "French",
            "translation_semantic": np.array([5, 5], np.int32)}
  return _example(**{**fields, **changes})


def _run(fn, example, config=None, seed=0):
  rng = np.random.default_rng(seed)
  return list(fn(example, _vocab(), rng) if config is None else fn(example, _vocab(), rng, config))


def _check(seqs, tokens, weights, task):
  assert len(seqs) == 1, seqs
  np.testing.assert_array_equal(seqs[0].tokens, np.array(tokens, np.int32))
  np.testing.assert_array_equal(seqs[0].weights, np.array(weights, np.float32))
  assert seqs[0].tokens.dtype == np.int32 and seqs[0].weights.dtype == np.float32
  assert seqs[0].task == task


def test_registered_names():
  names = ["asr", "ast", "asr_ast_s2st", "continuation", "interleaved", "s2st", "text_lm", "tts"]
  assert set(names) <= set(format_names())
  _check(list(get_format("asr")(_example(), _vocab(), np.random.default_rng(0))),
         ASR_EN + AUDIO + HI + [EOS], [0] * 17 + [1] * 3, "asr")


def test_asr_golden():
  _check(_run(tasks.asr, _example()), ASR_EN + AUDIO + HI + [EOS], [0] * 17 + [1] * 3, "asr")
  # Configurable weights; an empty transcript is kept (audio → EOS alone).
  _check(_run(tasks.asr, _example(), tasks.AsrConfig(prompt_weight=0.25, output_weight=2.0)),
         ASR_EN + AUDIO + HI + [EOS], [0.25] * 17 + [2.0] * 3, "asr")
  _check(_run(tasks.asr, _example(transcript="")), ASR_EN + AUDIO + [EOS], [0] * 17 + [1], "asr")


def test_asr_semantic_noise():
  """Each input unit is replaced with probability p by a uniform unit; the tag, transcript and weights are kept;
  the draw is the rng's (same seed → same sequence); the sequence's length never changes."""
  long = _example(semantic=np.full(4000, 3, np.int32), semantic_frame_rate=25.0)
  config = tasks.AsrConfig(semantic_noise=0.25)
  (seq,) = _run(tasks.asr, long, config, seed=1)
  audio = seq.tokens[len(ASR_EN):len(ASR_EN) + 4000]
  np.testing.assert_array_equal(seq.tokens[:len(ASR_EN)], ASR_EN)
  np.testing.assert_array_equal(seq.tokens[len(ASR_EN) + 4000:], HI + [EOS])
  assert ((audio >= 258) & (audio < 258 + 16)).all()
  changed = (audio != 261).mean()  # a replacement draws code 3 again 1/16 of the time
  assert abs(changed - 0.25 * 15 / 16) < 0.03, changed
  assert len(np.unique(audio)) == 16
  np.testing.assert_array_equal(_run(tasks.asr, long, config, seed=1)[0].tokens, seq.tokens)
  assert not np.array_equal(_run(tasks.asr, long, config, seed=2)[0].tokens, seq.tokens)
  # Off by default; the inference prompt never has it.
  np.testing.assert_array_equal(_run(tasks.asr, _example(), seed=1)[0].tokens, ASR_EN + AUDIO + HI + [EOS])
  with pytest.raises(ValueError, match="semantic_noise"):
    tasks.AsrConfig(semantic_noise=1.0)


def test_tts_golden():
  _check(_run(tasks.tts, _example()), TTS_EN + HI + AUDIO + [EOS], [0] * 16 + [1] * 4, "tts")


def test_tts_word_interleaved_golden():
  words = tasks.TtsConfig(word_interleaved=True)
  # "HI YOU ALL" over 6 frames at 1 Hz; the gaps' middles (1.5 s, 3.75 s) cut the audio at frames 2 and 4.
  ex = _example(transcript="HI YOU ALL", semantic=np.array([3, 3, 7, 9, 5, 5], np.int32),
                alignments=np.array([[0.0, 1.0], [2.0, 3.5], [4.0, 6.0]], np.float32))
  text = HI + [34] + YOU + [34] + ALL  # "HI YOU ALL"
  space = 34
  _check(_run(tasks.tts, ex, words),
         TTS_EN + text + [space] + HI + [261, 261] + [space] + YOU + [265, 267] + [space] + ALL + [263, 263, EOS],
         [0] * 27 + [1, 1] + [1, 0, 0, 0] + [1, 1] + [1, 0, 0, 0] + [1, 1, 1], "tts")
  # The prompt is what generation starts from; the later words are what it gives in turn.
  prompt, later = tasks.tts_word_prompt(_vocab(), "HI YOU ALL", "English", words)
  assert prompt.tolist() == TTS_EN + text + [space] + HI and [w.tolist() for w in later] == [[space] + YOU,
                                                                                             [space] + ALL]
  # Without alignments (or with fewer audio tokens than words) the example is skipped; plain TTS is unchanged.
  assert _run(tasks.tts, dict(ex, alignments=None), words) == []
  assert _run(tasks.tts, dict(ex, semantic=np.array([3, 3], np.int32)), words) == []
  _check(_run(tasks.tts, ex), TTS_EN + text + [261, 261, 265, 267, 263, 263, EOS], [0] * 24 + [1] * 7, "tts")
  with pytest.raises(ValueError, match="at least one word"):
    tasks.tts_word_prompt(_vocab(), " ", "English", words)


def test_text_lm_golden():
  _check(_run(tasks.text_lm, _example()), HI + [EOS], [1, 1, 1], "text_lm")


def test_continuation_golden():
  _check(_run(tasks.continuation, _example(), tasks.ContinuationConfig(prefix_seconds=1.0)),
         [261, 261, 265, EOS], [0, 1, 1, 1], "continuation")
  tagged = tasks.ContinuationConfig(prefix_seconds=2.0, tag="[Continue {language}]")
  _check(_run(tasks.continuation, _example(), tagged), CONTINUE_EN + [261, 261, 265, EOS], [0] * 21 + [1, 1],
         "continuation")
  # The frame rate comes from the example (here 2 Hz: 1 s = 2 frames), else from the config.
  _check(_run(tasks.continuation, _example(semantic_frame_rate=2.0), tasks.ContinuationConfig(prefix_seconds=1.0)),
         [261, 261, 265, EOS], [0, 0, 1, 1], "continuation")
  no_rate = {k: v for k, v in _example().items() if k != "semantic_frame_rate"}
  _check(_run(tasks.continuation, no_rate, tasks.ContinuationConfig(prefix_seconds=1.0, frame_rate=2.0)),
         [261, 261, 265, EOS], [0, 0, 1, 1], "continuation")
  # Default 3 s prefix covers the whole 3 s example: nothing left to continue.
  assert _run(tasks.continuation, _example()) == []


def test_continuation_max_length_crops_the_continuation():
  ex = _example(semantic=np.array([3, 3, 7, 9, 5, 5], np.int32))
  config = tasks.ContinuationConfig(prefix_seconds=2.0, max_length=5)
  _check(_run(tasks.continuation, ex, config), [261, 261, 265, 267, EOS], [0, 0, 1, 1, 1], "continuation")
  # The prefix alone leaves no room for a token and EOS: skipped.
  assert _run(tasks.continuation, ex, dataclasses.replace(config, max_length=3)) == []


def test_interleaved_golden():
  ex = _example(transcript="HI YOU", semantic=np.array([3, 3, 7, 9], np.int32))
  two = tasks.InterleavedConfig(min_spans=2, max_spans=2, first="text")
  # "HI YOU": the cut before "YOU" is at character 3 of 6 → frame 0.5 · 4 = 2.
  _check(_run(tasks.interleaved, ex, two), HI + [265, 267, EOS], [1] * 5, "interleaved")
  _check(_run(tasks.interleaved, ex, dataclasses.replace(two, first="audio")), [261, 261] + YOU + [EOS], [1] * 6,
         "interleaved")
  _check(_run(tasks.interleaved, ex, dataclasses.replace(two, unweighted_prefix=2)), HI + [265, 267, EOS],
         [0, 0, 1, 1, 1], "interleaved")
  # Dedupe: [3, 7, 9] starting at frames [0, 2, 3]; the cut at frame 2 leaves [3] before it.
  _check(_run(tasks.interleaved, ex, dataclasses.replace(two, first="audio", dedupe_semantic=True)),
         [261] + YOU + [EOS], [1] * 5, "interleaved")
  # Word alignments: the cut goes to the middle of the gap (0.4 s, 1.0 s) → 0.7 s → frame 1.
  aligned = dict(ex, alignments=[(0.0, 0.4), (1.0, 4.0)])
  _check(_run(tasks.interleaved, aligned, two), HI + [261, 265, 267, EOS], [1] * 6, "interleaved")
  with pytest.raises(ValueError, match="1 word alignments for 2 words"):
    _run(tasks.interleaved, dict(ex, alignments=[(0.0, 0.4)]), two)
  # Three spans of "HI YOU ALL" over 6 frames: cuts at characters 3 and 7 of 10 → frames 2 and 4.
  three = _example(transcript="HI YOU ALL", semantic=np.array([3, 3, 7, 9, 5, 5], np.int32))
  _check(_run(tasks.interleaved, three, dataclasses.replace(two, min_spans=3, max_spans=3)),
         HI + [265, 267] + ALL + [EOS], [1] * 8, "interleaved")
  # One word: fewer than two spans possible, skipped.
  assert _run(tasks.interleaved, _example(), two) == []


def test_translation_golden():
  _check(_run(tasks.ast, _translated()), AST_EN_FR + AUDIO + OUI + [EOS], [0] * 24 + [1] * 4, "ast")
  _check(_run(tasks.s2st, _translated()), S2ST_EN_FR + AUDIO + [263, 263, EOS], [0] * 25 + [1] * 3, "s2st")
  # Combined: transcript, then translated text, then translated audio, each weighted.
  _check(_run(tasks.asr_ast_s2st, _translated()), ASR_AST_S2ST_EN_FR + AUDIO + HI + BAR + OUI + [263, 263, EOS],
         [0] * 33 + [1] * 11, "asr_ast_s2st")
  _check(_run(tasks.asr_ast_s2st, _translated(), tasks.CombinedConfig(parts=("ASR", "AST"))),
         ASR_AST_EN_FR + AUDIO + HI + BAR + OUI + [EOS], [0] * 28 + [1] * 9, "asr_ast_s2st")
  seq, = _run(tasks.asr_ast_s2st, _translated())
  assert _vocab().decode(seq.tokens) == [Span("text", "[ASR AST S2ST English French] "), Span("semantic", [3, 3, 7]),
                                         Span("text", "HI | OUI"), Span("semantic", [5, 5]), Span("text", "")]


def test_translation_tasks_skip_without_their_fields():
  for fn in (tasks.ast, tasks.s2st, tasks.asr_ast_s2st):
    assert _run(fn, _example()) == []
    assert _run(fn, _translated(translation_language=None)) == []
  assert _run(tasks.ast, _translated(translation_text=None)) == []
  assert _run(tasks.s2st, _translated(translation_semantic=None)) == []
  assert _run(tasks.asr_ast_s2st, _translated(translation_semantic=None)) == []
  assert _run(tasks.asr_ast_s2st, _translated(transcript=None)) == []
  assert len(_run(tasks.ast, _translated(transcript=None))) == 1  # AST needs no transcript
  assert len(_run(tasks.asr_ast_s2st, _translated(translation_semantic=None),
                  tasks.CombinedConfig(parts=("ASR", "AST")))) == 1


def test_skips_without_transcript_or_language():
  no_text = _example(transcript=None)
  for fn in (tasks.asr, tasks.tts, tasks.text_lm, tasks.interleaved):
    assert _run(fn, no_text) == []
  for fn in (tasks.tts, tasks.text_lm):
    assert _run(fn, _example(transcript="")) == []
  # Continuation needs no transcript.
  _check(_run(tasks.continuation, no_text, tasks.ContinuationConfig(prefix_seconds=1.0)), [261, 261, 265, EOS],
         [0, 1, 1, 1], "continuation")
  # No language: skipped, unless the config names a default.
  no_language = _example(language=None)
  assert _run(tasks.asr, no_language) == [] and _run(tasks.tts, no_language) == []
  assert _run(tasks.ast, _translated(language=None)) == []
  _check(_run(tasks.asr, no_language, tasks.AsrConfig(default_language="English")), ASR_EN + AUDIO + HI + [EOS],
         [0] * 17 + [1] * 3, "asr")
  assert len(_run(tasks.text_lm, no_language)) == 1
  assert _run(tasks.asr, _example(semantic=np.zeros(0, np.int32))) == []


def test_dedupe_semantic_option():
  dedupe = tasks.AsrConfig(dedupe_semantic=True)
  _check(_run(tasks.asr, _example(), dedupe), ASR_EN + [261, 265] + HI + [EOS], [0] * 16 + [1] * 3, "asr")
  _check(_run(tasks.tts, _example(), tasks.TtsConfig(dedupe_semantic=True)), TTS_EN + HI + [261, 265, EOS],
         [0] * 16 + [1] * 3, "tts")
  _check(_run(tasks.s2st, _translated(), tasks.S2stConfig(dedupe_semantic=True)),
         S2ST_EN_FR + [261, 265, 263, EOS], [0] * 24 + [1] * 2, "s2st")
  # Continuation: the run [3, 3] starts at frame 0, inside a 2 s prefix.
  _check(_run(tasks.continuation, _example(), tasks.ContinuationConfig(prefix_seconds=2.0, dedupe_semantic=True)),
         [261, 265, EOS], [0, 1, 1], "continuation")


def test_prompt_never_weighted_and_eos_last():
  vocab = _vocab()
  tagged = {"asr": 2, "tts": 1, "ast": 2, "s2st": 2, "asr_ast_s2st": 2}  # prompt spans: tag + input (tts: one text)
  for name in ["asr", "tts", "ast", "s2st", "asr_ast_s2st", "text_lm", "interleaved", "continuation"]:
    example = _translated(transcript="HI YOU", semantic=np.arange(10, dtype=np.int32))
    seqs = list(get_format(name)(example, vocab, np.random.default_rng(1)))
    assert len(seqs) == 1, name
    seq = seqs[0]
    assert seq.tokens[-1] == EOS and seq.weights[-1] > 0, name
    assert np.count_nonzero(seq.tokens == EOS) == 1, name
    # Weights are 0 on a prefix, then positive to the end.
    first = int(np.argmax(seq.weights > 0))
    assert np.all(seq.weights[:first] == 0) and np.all(seq.weights[first:] > 0), name
    if name in tagged:
      spans = vocab.decode(seq.tokens[:first])
      assert len(spans) == tagged[name] and spans[0].kind == "text" and spans[0].value.startswith("["), name
      assert "] " in spans[0].value and "]  " not in spans[0].value, name


def test_max_length_drops_paired_tasks():
  for fn, config in [(tasks.asr, tasks.AsrConfig), (tasks.tts, tasks.TtsConfig)]:
    assert len(_run(fn, _example(), config(max_length=20))) == 1
    assert _run(fn, _example(), config(max_length=19)) == []
  assert _run(tasks.text_lm, _example(), tasks.TextLmConfig(max_length=2)) == []
  assert _run(tasks.asr_ast_s2st, _translated(), tasks.CombinedConfig(max_length=43)) == []


def test_determinism_given_the_seed():
  long = _example(transcript="ONE TWO THREE FOUR FIVE SIX", semantic=np.arange(16, dtype=np.int32) % 5)
  configs = [(tasks.interleaved, tasks.InterleavedConfig(min_spans=2, max_spans=5)),
             (tasks.continuation, tasks.ContinuationConfig(prefix_fraction=(0.2, 0.8)))]
  for fn, config in configs:
    outputs = {}
    for seed in range(12):
      a, b = _run(fn, long, config, seed), _run(fn, long, config, seed)
      np.testing.assert_array_equal(a[0].tokens, b[0].tokens)
      np.testing.assert_array_equal(a[0].weights, b[0].weights)
      outputs[seed] = (tuple(a[0].tokens), tuple(a[0].weights))
    assert len(set(outputs.values())) > 2, fn  # the rng does choose


def test_config_errors():
  with pytest.raises(ValueError, match="allowed placeholders: {language}"):
    tasks.AsrConfig(tag="[ASR {lang}]")
  with pytest.raises(ValueError, match="parts"):
    tasks.CombinedConfig(parts=("AST", "ASR"))
  with pytest.raises(ValueError, match="prefix_fraction"):
    tasks.ContinuationConfig(prefix_fraction=(0.5, 1.0))
  with pytest.raises(ValueError, match="output_weight"):
    tasks.TextLmConfig(output_weight=-1.0)
  with pytest.raises(ValueError, match="first"):
    tasks.InterleavedConfig(first="both")
