"""The speech–text loader: exact rows from a hand-made shard, exact resume, disjoint hosts, mixture rates, errors."""

import collections
import dataclasses
import json

import numpy as np
import pytest

from audiopalm.data import mixture
from audiopalm.checkpoints.input_state import merge_states
from audiopalm.data.iterator import BATCH_KEYS
from audiopalm.data.mixture import MixtureComponent
from audiopalm.data.speech_text_source import SpeechTextConfig
from audiopalm.data.token_source import TokenShardSource
from audiopalm.formats.audiolm_stages import DELAY_PAD, CoarseAcousticConfig
from audiopalm.formats.audiopalm_tasks import ContinuationConfig, TtsConfig
from audiopalm.tokens import dataset_info, schema, shards, synthetic

SMALL = synthetic.SyntheticConfig(examples=60, num_shards=3, min_seconds=1.0, max_seconds=4.0, semantic_vocab=64,
                                  acoustic_vocab=32, num_codebooks=4, words_per_second=2.0)
ASR_EN = [93, 67, 85, 84, 34, 71, 112, 105, 110, 107, 117, 106, 95, 34]  # "[ASR English] " as byte ids (ord + 2)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
  out = tmp_path_factory.mktemp("small")
  synthetic.write_synthetic_dataset(str(out), SMALL)
  return str(out)


def _config(dataset, *components, **kw):
  comps = tuple(MixtureComponent(f, dataset, rate=r, config=c) for f, r, c in components)
  defaults = dict(seq_len=256, global_batch_size=4, read_threads=0, packing_window=64, log_every=0)
  return SpeechTextConfig(components=comps, **{**defaults, **kw})


PALM = (("asr", 0.5, None), ("tts", 0.3, None), ("continuation", 0.2, ContinuationConfig(prefix_fraction=(0.3, 0.7))))


def test_golden_batch_from_a_hand_made_shard(tmp_path):
  info = schema.TokensInfo(
      semantic=schema.TokenizerSpec("semantic", "sem", "sem-hand", 16, 1, 25.0, 16000),
      acoustic=schema.TokenizerSpec("codec", "codec", "codec-hand", 4, 2, 50.0, 16000))
  segs = [schema.TokenizedSegment(id=f"u{i}", utterance_id=f"u{i}", segment_index=0, source="x.flac", start=0.0,
                                  duration=0.12, transcript=text, language="English", speaker="s",
                                  semantic=np.array(sem), acoustic=np.zeros((2 * len(sem), 2), np.int64))
          for i, (text, sem) in enumerate([("HI", [3, 3, 7]), ("ALL", [5])])]
  with shards.ShardWriter(str(tmp_path), 0, 1, info) as writer:
    for seg in segs:
      writer.write(seg)
  dataset_info.write_dataset_info(str(tmp_path), tokens=info, shards=[writer.stats])
  cfg = SpeechTextConfig(components=(MixtureComponent("asr", str(tmp_path)),), seq_len=48, global_batch_size=1,
                         shuffle=False, num_epochs=1, packing="first_fit", packing_bins=1, read_threads=0)
  assert cfg.vocab_size == 384  # 258 bytes + 16 semantic = 274, padded to a multiple of 128
  batches = list(cfg.make_iterator(0, 1))
  assert len(batches) == 1
  row = {k: v[0] for k, v in batches[0].items()}
  # Semantic code c is id 258 + c. ASR: tag and audio unweighted, transcript and EOS (1) weighted.
  first = ASR_EN + [261, 261, 265] + [74, 75, 1]  # "HI"
  second = ASR_EN + [263] + [67, 78, 78, 1]  # "ALL"
  pad = 48 - len(first) - len(second)
  np.testing.assert_array_equal(row["targets"], first + second + [0] * pad)
  np.testing.assert_array_equal(row["inputs"], [1] + first[:-1] + [1] + second[:-1] + [0] * pad)
  np.testing.assert_array_equal(row["weights"], [0] * 17 + [1] * 3 + [0] * 15 + [1] * 4 + [0] * pad)
  np.testing.assert_array_equal(row["segment_ids"], [1] * 20 + [2] * 19 + [0] * pad)
  np.testing.assert_array_equal(row["positions"], list(range(20)) + list(range(19)) + [0] * pad)
  assert tuple(batches[0]) == BATCH_KEYS


def test_resume_mid_epoch_gives_exactly_the_following_batches(small):
  cfg = _config(small, *PALM)
  it = cfg.make_iterator(0, 4)
  for _ in range(7):
    next(it)
  state = json.loads(json.dumps(it.get_state()))  # what the trainer's checkpoint holds
  expected = [next(it) for _ in range(30)]  # several epochs of the 60 examples: crosses epoch boundaries
  resumed = cfg.make_iterator(0, 4)
  resumed.set_state(state)
  for want in expected:
    got = next(resumed)
    assert all(np.array_equal(got[k], want[k]) for k in BATCH_KEYS)
  # And a second epoch differs from the first (reshuffled, new crops), so resuming is not trivially equal.
  fresh = cfg.make_iterator(0, 4)
  assert not np.array_equal(next(fresh)["targets"], expected[0]["targets"])


def _segments(batch, vocab):
  out = []
  for row in range(batch["targets"].shape[0]):
    seg, tgt = batch["segment_ids"][row], batch["targets"][row]
    for s in range(1, seg.max() + 1):
      out.append("".join(span.value for span in vocab.decode(tgt[seg == s]) if span.kind == "text"))
  return out


def test_two_streams_see_disjoint_data_whose_union_is_the_whole(small):
  cfg = _config(small, ("text_lm", 1.0, None), global_batch_size=2, num_epochs=1)
  seen = [[s for b in cfg.dataset(h, 2, 1) for s in _segments(b, cfg.vocab)] for h in (0, 1)]
  source = TokenShardSource(small)
  index = {source[i]["transcript"]: i for i in range(len(source))}
  assert len(index) == len(source) == 60  # transcripts identify examples
  assert len(seen[0]) == len(seen[1]) == 30
  assert sorted(seen[0] + seen[1]) == sorted(index)
  assert not set(seen[0]) & set(seen[1])
  # The streams do not walk the dataset in lockstep (stream 1 reading the neighbour of stream 0's example).
  neighbours = [abs(index[a] - index[b]) == 1 for a, b in zip(seen[0], seen[1])]
  assert sum(neighbours) < 5, neighbours
  # Finite epochs on several hosts would leave hosts waiting for one that ran out: refused.
  with pytest.raises(ValueError, match="num_epochs=1 with several processes"):
    cfg.make_iterator(0, 1)


def test_a_state_saved_under_another_input_config_is_refused(small):
  cfg = _config(small, *PALM)
  it = cfg.make_iterator(0, 4)
  next(it)
  state = it.get_state()
  other = _config(small, *PALM, seq_len=512)
  with pytest.raises(ValueError, match="different input config \\(seq_len: 256 then, 512 now\\)"):
    other.make_iterator(0, 4).set_state(state)
  with pytest.raises(ValueError, match="streams: 4 then, 2 now"):
    _config(small, *PALM, streams=2).make_iterator(0, 4).set_state(state)
  fresh = _config(small, *PALM, seq_len=512, check_resumed_state=False)
  it = fresh.make_iterator(0, 4)
  it.set_state(state)  # ignored, with a warning: the input starts afresh
  np.testing.assert_array_equal(next(it)["targets"], next(fresh.make_iterator(0, 4))["targets"])


def _take(it, n):
  return [next(it) for _ in range(n)]


def _concat(parts):
  return {k: np.concatenate([p[k] for p in parts]) for k in BATCH_KEYS}


def _assert_batches_equal(got, want):
  for g, w in zip(got, want, strict=True):
    for k in BATCH_KEYS:
      np.testing.assert_array_equal(g[k], w[k], err_msg=k)


def test_the_global_batches_and_state_do_not_depend_on_the_number_of_processes(small):
  cfg = _config(small, *PALM)  # 4 rows: 4 streams of one row (the default)
  whole = cfg.make_iterator(0, 4)
  halves = [cfg.make_iterator(0, 2), cfg.make_iterator(2, 4)]
  _assert_batches_equal(_take(whole, 3), [_concat([next(h) for h in halves]) for _ in range(3)])
  merged = merge_states([h.get_state() for h in halves])  # what a 2-process checkpoint holds
  assert merged == whole.get_state() and sorted(merged["streams"]) == ["0", "1", "2", "3"]
  state = json.loads(json.dumps(merged))
  expected = _take(whole, 4)
  one = cfg.make_iterator(0, 4)  # 2 processes -> 1
  one.set_state(state)
  _assert_batches_equal(_take(one, 4), expected)
  quarters = [cfg.make_iterator(i, i + 1) for i in range(4)]  # 2 processes -> 4
  for q in quarters:
    q.set_state(state)
  _assert_batches_equal([_concat([next(q) for q in quarters]) for _ in range(4)], expected)


def test_a_process_split_that_cuts_a_stream_is_refused(small):
  cfg = _config(small, *PALM, streams=2)  # 2 streams of 2 rows
  with pytest.raises(ValueError, match=r"rows \[0, 1\) .* split the input's 2 streams of 2 rows"):
    cfg.make_iterator(0, 1)
  with pytest.raises(ValueError, match="streams=3 must be >= 1 and divide global_batch_size"):
    _config(small, *PALM, streams=3)


def test_a_changed_global_batch_continues_every_stream_at_its_next_row(small, caplog):
  cfg = _config(small, *PALM)  # 4 streams
  it = cfg.make_iterator(0, 4)
  _take(it, 2)
  state = json.loads(json.dumps(it.get_state()))
  following = _take(it, 2)  # stream k's next two rows are row k of these
  bigger = _config(small, *PALM, global_batch_size=8)  # the run keeps its 4 streams, 2 rows each
  resumed = bigger.make_iterator(0, 8)
  resumed.set_state(state)
  assert "global batch size changed (4 then, 8 now)" in caplog.text
  got = next(resumed)
  for k in range(4):
    for r in range(2):
      for key in BATCH_KEYS:
        np.testing.assert_array_equal(got[key][2 * k + r], following[r][key][k], err_msg=f"stream {k} row {r} {key}")
  odd = _config(small, *PALM, global_batch_size=6).make_iterator(0, 6)
  with pytest.raises(ValueError, match="global batch of 6 rows cannot be made of 4 input streams"):
    odd.set_state(state)


def test_stream_examples_are_strided_slices():
  hosts = [list(mixture.stream_examples(list(range(10)), h, 3)) for h in range(3)]
  assert hosts == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
  with pytest.raises(ValueError, match="cannot be split between 4 input streams"):
    mixture.stream_examples([1, 2, 3], 0, 4)


def test_mixture_rates_hold_over_many_batches(small):
  cfg = _config(small, *PALM, emit_task_ids=True)
  counts = collections.Counter()
  it = cfg.make_iterator(0, 4)
  for _ in range(150):
    batch = next(it)
    for row in range(4):
      seg, task = batch["segment_ids"][row], batch["task_ids"][row]
      for s in range(1, seg.max() + 1):
        counts[int(task[seg == s][0])] += 1
      assert (task[seg == 0] == -1).all()
  total = sum(counts.values())
  assert total > 1000
  for i, (_, rate, _) in enumerate(PALM):
    assert counts[i] / total == pytest.approx(rate, abs=0.02), (counts, total)


def test_a_component_that_makes_nothing_fails_before_training(small):
  cfg = _config(small, ("asr", 1.0, None), ("ast", 1.0, None))
  with pytest.raises(ValueError, match=r"'ast' made no usable sequence from the first 15 examples .*translation"):
    cfg.make_iterator(0, 2)  # streams 0 and 1 of 4: 15 of the 60 examples each
  too_short = _config(small, ("asr", 1.0, None), seq_len=8)
  with pytest.raises(ValueError, match="longer than the row length 8"):
    too_short.make_iterator(0, 4)


def test_config_errors_name_the_problem(small, tmp_path):
  with pytest.raises(ValueError, match="components is empty"):
    SpeechTextConfig(components=())
  with pytest.raises(ValueError, match="names repeat"):
    _config(small, ("asr", 1.0, None), ("asr", 1.0, None))
  with pytest.raises(ValueError, match="unknown format 'asrr'"):
    MixtureComponent("asrr", small)
  with pytest.raises(ValueError, match="takes a AsrConfig, got a TtsConfig"):
    MixtureComponent("asr", small, config=TtsConfig())
  missing = _config(str(tmp_path / "nothing"), ("asr", 1.0, None))
  with pytest.raises(FileNotFoundError, match="no token dataset at .*data_pipeline.tokenize"):
    missing.vocab_size  # pylint: disable=pointless-statement
  missing_text = SpeechTextConfig(components=(MixtureComponent("text_lm", str(tmp_path / "text")),))
  with pytest.raises(FileNotFoundError, match="no token dataset at .*audiopalm.main.import_text"):
    missing_text.vocab_size  # pylint: disable=pointless-statement


def test_datasets_with_different_tokenizers_cannot_share_a_vocabulary(small, tmp_path):
  other = tmp_path / "other"
  synthetic.write_synthetic_dataset(str(other), synthetic.SyntheticConfig(
      examples=4, num_shards=1, min_seconds=1.0, max_seconds=2.0, semantic_vocab=32))
  cfg = SpeechTextConfig(components=(MixtureComponent("asr", small), MixtureComponent("tts", str(other))))
  with pytest.raises(ValueError, match="made with different semantic tokenizers: .*small0 \\(semantic-synthetic-k64\\)"):
    cfg.vocab_size  # pylint: disable=pointless-statement
  # Another codec only matters when a format reads acoustic tokens.
  codec = tmp_path / "codec"
  synthetic.write_synthetic_dataset(str(codec), dataclasses.replace(SMALL, examples=4, num_shards=1, num_codebooks=2))
  both = SpeechTextConfig(components=(MixtureComponent("asr", small), MixtureComponent("tts", str(codec))))
  assert both.vocab_spec.acoustic == ()
  stage = SpeechTextConfig(components=(MixtureComponent("fine_acoustic", small),
                                       MixtureComponent("coarse_acoustic", str(codec))))
  with pytest.raises(ValueError, match="different acoustic tokenizers"):
    stage.vocab_size  # pylint: disable=pointless-statement


def test_stage_mixtures_get_acoustic_levels_and_the_delay_token(small):
  palm = _config(small, *PALM)
  assert palm.vocab_spec.acoustic == () and palm.vocab_spec.specials == ()
  stage = _config(small, ("coarse_acoustic", 1.0, CoarseAcousticConfig(coarse_levels=2, layout="delay")),
                  seq_len=1024)
  spec = stage.vocab_spec
  assert [r.name for r in spec.acoustic] == ["acoustic_0", "acoustic_1", "acoustic_2", "acoustic_3"]
  assert spec.specials == (DELAY_PAD,) and spec.size % 128 == 0
  batch = next(stage.make_iterator(0, 4))
  kinds = {stage.vocab.kind_of(int(t)) for t in batch["targets"][batch["segment_ids"] > 0]}
  assert kinds == {"text", "special", "semantic", "acoustic_0", "acoustic_1"}  # EOS, delay pad, conditioning, Q'=2


def test_a_finite_input_ends_with_a_padded_batch_holding_the_rest(small):
  cfg = _config(small, ("text_lm", 1.0, None), global_batch_size=7, num_epochs=1)
  batches = list(cfg.dataset(0, 1, 7))
  assert all(b["inputs"].shape[0] == 7 for b in batches)
  seen = [s for b in batches for s in _segments(b, cfg.vocab)]
  assert len(seen) == 60 and len(set(seen)) == 60  # every example once, none dropped with the last batch
  last = batches[-1]
  empty = last["segment_ids"].max(axis=1) == 0
  assert empty.any() and not last["weights"][empty].any()
