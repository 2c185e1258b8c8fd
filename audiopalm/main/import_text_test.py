"""audiopalm.main.import_text: paragraphs become transcript-only examples that the text_lm task trains on, beside audio."""

import itertools
import os

import numpy as np
import pytest
from tensorflow_datasets.core import constants as tfds_constants

from audiopalm.cli.inference_flags import UsageError
from audiopalm.data.mixture import MixtureComponent
from audiopalm.data.speech_text_source import SpeechTextConfig
from audiopalm.data.token_source import TokenShardSource
from audiopalm.main import import_text
from audiopalm.tokens import dataset_info, shards, synthetic

SMALL = synthetic.SyntheticConfig(examples=8, num_shards=1, min_seconds=1.0, max_seconds=2.0, semantic_vocab=64,
                                  acoustic_vocab=32, num_codebooks=4, words_per_second=2.0)
# Paragraphs end at lines that are empty or only whitespace; whitespace inside one collapses.
TEXT = "GO UP  TWO\nSTEPS\n \t\nTAKE THE RED CUP\n\n   \n\nDROP A BALL\n"
PARAGRAPHS = ["GO UP TWO STEPS", "TAKE THE RED CUP", "DROP A BALL"]


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("speech"))
  synthetic.write_synthetic_dataset(out, SMALL)
  return out


def _write(tmp_path, name, text):
  path = tmp_path / name
  path.write_text(text, encoding="utf-8")
  return str(path)


def _transcripts(directory, split="train"):
  source = TokenShardSource(directory, split)
  return [source[i]["transcript"] for i in range(len(source))]


def test_paragraphs_become_examples_in_order_with_the_like_datasets_tokenizers(speech, tmp_path):
  a, b = _write(tmp_path, "a.txt", TEXT), _write(tmp_path, "b.txt", "PUT IT DOWN")
  out = str(tmp_path / "text")
  meta = import_text.import_text([a, b], speech, out, paragraphs_per_shard=3)
  assert meta.tokens == dataset_info.read_metadata(speech).tokens
  assert [s.examples for s in meta.split_shards("train")] == [3, 1]
  assert meta.totals.transcribed == 4 and meta.totals.semantic_tokens == 0 and meta.totals.seconds == 0
  examples = [TokenShardSource(out)[i] for i in range(4)]
  assert [e["transcript"] for e in examples] == PARAGRAPHS + ["PUT IT DOWN"]
  assert [e["id"] for e in examples] == ["a-0000000", "a-0000001", "a-0000002", "b-0000000"]
  assert examples[3]["source"] == f"{b}#0" and examples[0]["language"] == "English"
  assert examples[0]["semantic"].shape == (0,) and examples[0]["acoustic"].shape == (0, SMALL.num_codebooks)


def test_text_lm_trains_on_it_beside_audio_tasks_of_the_speech_dataset(speech, tmp_path):
  out = str(tmp_path / "text")
  import_text.import_text([_write(tmp_path, "a.txt", "HI\n\nALL")], speech, out)
  cfg = SpeechTextConfig(components=(MixtureComponent("asr", speech), MixtureComponent("text_lm", out)),
                         seq_len=64, global_batch_size=2, shuffle=False, num_epochs=1, read_threads=0,
                         log_every=0, emit_task_ids=True)
  rows = {k: np.concatenate([b[k] for b in cfg.make_iterator(0, 2)]) for k in ("targets", "weights", "task_ids")}
  text = rows["targets"][(rows["task_ids"] == 1) & (rows["weights"] > 0)]
  # Bytes are ord + 2, EOS 1: both paragraphs, each one whole sequence, all weighted.
  assert sorted(text.tolist()) == sorted([ord(c) + 2 for c in "HIALL"] + [1, 1])
  assert (rows["task_ids"] == 0).any()  # the ASR component still reads the speech dataset


def test_a_rerun_replaces_the_split_and_keeps_other_splits(speech, tmp_path):
  out = str(tmp_path / "text")
  a = _write(tmp_path, "a.txt", TEXT)
  import_text.import_text([a], speech, out, paragraphs_per_shard=2)
  import_text.import_text([_write(tmp_path, "held.txt", "A B")], speech, out, split="test")
  assert _transcripts(out) == PARAGRAPHS and _transcripts(out, "test") == ["A B"]
  # Changed text, same shard count: nothing old is kept.
  _write(tmp_path, "a.txt", "NEW ONE\n\nNEW TWO\n\nNEW THREE")
  import_text.import_text([a], speech, out, paragraphs_per_shard=2)
  assert _transcripts(out) == ["NEW ONE", "NEW TWO", "NEW THREE"]
  # Another shard count: the old shards go.
  meta = import_text.import_text([a], speech, out, paragraphs_per_shard=3, language="French")
  assert sorted(f for f in os.listdir(out) if ".tfrecord-" in f) == [
      shards.shard_filename(0, 1, split="test"), shards.shard_filename(0, 1)]
  assert TokenShardSource(out)[0]["language"] == "French"
  assert meta.splits == ["test", "train"] and meta.totals.examples == 4


def test_errors_name_the_problem(speech, tmp_path):
  text = _write(tmp_path, "a.txt", TEXT)
  with pytest.raises(UsageError, match="no token dataset"):
    import_text.import_text([text], str(tmp_path / "nothing"), str(tmp_path / "o"))
  with pytest.raises(UsageError, match="is not a file"):
    import_text.import_text([str(tmp_path / "missing.txt")], speech, str(tmp_path / "o"))
  with pytest.raises(UsageError, match="no text"):
    import_text.import_text([_write(tmp_path, "empty.txt", "\n \n\n")], speech, str(tmp_path / "o"))
  (tmp_path / "latin1.txt").write_bytes("CAF\xc9".encode("latin-1"))
  with pytest.raises(UsageError, match="not UTF-8"):
    import_text.import_text([str(tmp_path / "latin1.txt")], speech, str(tmp_path / "o"))
  (tmp_path / "other").mkdir()
  with pytest.raises(UsageError, match="names repeat"):
    import_text.import_text([text, _write(tmp_path / "other", "a.txt", "X")], speech, str(tmp_path / "o"))
  with pytest.raises(UsageError, match=">= 1"):
    import_text.import_text([text], speech, str(tmp_path / "o"), paragraphs_per_shard=0)
  assert not os.path.exists(tmp_path / "o")
  with pytest.raises(UsageError, match="must not be the --like"):
    import_text.import_text([text], speech, speech)
  speech_copy = tmp_path / "speech_copy"  # a dataset this tool did not write is never touched
  synthetic.write_synthetic_dataset(str(speech_copy), SMALL)
  before = sorted(os.listdir(speech_copy))
  with pytest.raises(UsageError, match="did not write"):
    import_text.import_text([text], speech, str(speech_copy))
  assert sorted(os.listdir(speech_copy)) == before


def test_cli(speech, tmp_path, capsys):
  a = _write(tmp_path, "a.txt", TEXT)
  assert import_text.main([f"--text={a}", f"--like={speech}", f"--output_dir={tmp_path / 'text'}"]) == 0
  assert "wrote 3 text examples" in capsys.readouterr().out
  assert import_text.main([f"--text={a}", f"--like={tmp_path}", "--output_dir=/nonexistent/x"]) == 2
  assert "no token dataset" in capsys.readouterr().err


def test_an_import_that_stops_part_way_never_reads_as_a_dataset_and_a_rerun_recovers(speech, tmp_path,
                                                                                       monkeypatch):
  out = str(tmp_path / "text")
  a = _write(tmp_path, "a.txt", TEXT)
  import_text.import_text([a], speech, out, paragraphs_per_shard=1)
  import_text.import_text([_write(tmp_path, "held.txt", "A B")], speech, out, split="test")
  _write(tmp_path, "a.txt", "NEW ONE\n\nNEW TWO\n\nNEW THREE")
  real_segment, written = import_text.text_segment, []

  def segment_then_die(*args):
    if len(written) == 2:  # shards 0 and 1 of 3 hold new text, shard 2 still the old
      raise KeyboardInterrupt
    written.append(args)
    return real_segment(*args)

  monkeypatch.setattr(import_text, "text_segment", segment_then_die)
  with pytest.raises(KeyboardInterrupt):
    import_text.import_text([a], speech, out, paragraphs_per_shard=1)
  for name in (dataset_info.METADATA_FILE, dataset_info.STATS_FILE, tfds_constants.DATASET_INFO_FILENAME):
    assert not os.path.exists(os.path.join(out, name)), name
  with pytest.raises(FileNotFoundError, match="audiopalm.main.import_text"):  # the mixture's error says what to run
    SpeechTextConfig(components=(MixtureComponent("text_lm", out),), seq_len=64, global_batch_size=2)._metadata
  monkeypatch.setattr(import_text, "text_segment", real_segment)
  meta = import_text.import_text([a], speech, out, paragraphs_per_shard=1)
  assert _transcripts(out) == ["NEW ONE", "NEW TWO", "NEW THREE"] and _transcripts(out, "test") == ["A B"]
  assert meta.splits == ["test", "train"] and not os.path.exists(os.path.join(out, import_text.REPLACED))
  assert dataset_info.read_stats(out)["totals"]["examples"] == 4


def test_paragraphs_stream_lines_of_any_ending(tmp_path):
  crlf = _write(tmp_path, "crlf.txt", "")
  (tmp_path / "crlf.txt").write_bytes(b"ONE\r\nLINE\r\n \r\nTWO\r\n")
  items = import_text.paragraphs([crlf, _write(tmp_path, "a.txt", TEXT)])
  assert next(items) == (crlf, 0, "ONE LINE")  # a generator: nothing is read ahead
  assert [text for _, _, text in items] == ["TWO"] + PARAGRAPHS
  (tmp_path / "bad.txt").write_bytes(b"FINE\n\nCAF\xc9\n")
  with pytest.raises(UsageError, match="line 3"):
    list(import_text.paragraphs([str(tmp_path / "bad.txt")]))


def test_text_that_changes_between_the_two_passes_is_refused(speech, tmp_path, monkeypatch):
  a, out = _write(tmp_path, "a.txt", TEXT), str(tmp_path / "text")
  real, calls = import_text.paragraphs, []

  def shrinking(paths):
    calls.append(paths)
    return itertools.islice(real(paths), 3 if len(calls) == 1 else 2)

  monkeypatch.setattr(import_text, "paragraphs", shrinking)
  with pytest.raises(RuntimeError, match="changed while it was imported"):
    import_text.import_text([a], speech, out)
  assert not os.path.exists(os.path.join(out, dataset_info.METADATA_FILE))
