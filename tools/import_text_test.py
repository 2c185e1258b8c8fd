"""tools.import_text: paragraphs become transcript-only examples that the text_lm task trains on, beside audio."""

import os

import numpy as np
import pytest

from audiopalm.cli.inference_flags import UsageError
from audiopalm.data.mixture import MixtureComponent
from audiopalm.data.speech_text_source import SpeechTextConfig
from audiopalm.data.token_source import TokenShardSource
from data_pipeline import dataset_info, shards, synthetic
from tools import import_text

SMALL = synthetic.SyntheticConfig(examples=8, num_shards=1, min_seconds=1.0, max_seconds=2.0, semantic_vocab=64,
                                  acoustic_vocab=32, num_codebooks=4, words_per_second=2.0)
KEPT_FILES = ("dataset_info.json", "features.json", "metadata.json", "stats.json")
TEXT = "GO UP  TWO\nSTEPS\n\n\n\nTAKE THE RED CUP\n\n   \n\nDROP A BALL\n"


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("speech"))
  synthetic.write_synthetic_dataset(out, SMALL)
  return out


def _write(tmp_path, name, text):
  path = tmp_path / name
  path.write_text(text, encoding="utf-8")
  return str(path)


def test_paragraphs_become_examples_in_order_with_the_like_datasets_tokenizers(speech, tmp_path):
  a, b = _write(tmp_path, "a.txt", TEXT), _write(tmp_path, "b.txt", "PUT IT DOWN")
  out = str(tmp_path / "text")
  meta = import_text.import_text([a, b], speech, out, paragraphs_per_shard=3)
  assert meta.tokens == dataset_info.read_metadata(speech).tokens
  assert [s.examples for s in meta.split_shards("train")] == [3, 1]
  assert meta.totals.transcribed == 4 and meta.totals.semantic_tokens == 0 and meta.totals.seconds == 0
  examples = [TokenShardSource(out)[i] for i in range(4)]
  assert [e["transcript"] for e in examples] == ["GO UP TWO STEPS", "TAKE THE RED CUP", "DROP A BALL", "PUT IT DOWN"]
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


def test_rerun_keeps_complete_shards_and_writes_missing_ones(speech, tmp_path):
  a = _write(tmp_path, "a.txt", TEXT)
  out = str(tmp_path / "text")
  import_text.import_text([a], speech, out, paragraphs_per_shard=2)
  first = os.path.join(out, shards.shard_filename(0, 2))
  second = os.path.join(out, shards.shard_filename(1, 2))
  mtime = os.stat(first).st_mtime_ns
  os.remove(second)
  meta = import_text.import_text([a], speech, out, paragraphs_per_shard=2)
  assert os.stat(first).st_mtime_ns == mtime and os.path.exists(second)
  assert meta.totals.examples == 3
  with pytest.raises(UsageError, match="give --overwrite"):  # other text, another shard count: never mixed
    import_text.import_text([a], speech, out, paragraphs_per_shard=3)
  meta = import_text.import_text([a], speech, out, paragraphs_per_shard=3, overwrite=True)
  assert sorted(os.listdir(out)) == sorted([shards.shard_filename(0, 1), *KEPT_FILES])
  assert len(TokenShardSource(out)) == 3 and meta.totals.examples == 3


def test_errors_name_the_problem(speech, tmp_path):
  with pytest.raises(UsageError, match="no token dataset"):
    import_text.import_text([_write(tmp_path, "a.txt", TEXT)], str(tmp_path / "nothing"), str(tmp_path / "o"))
  with pytest.raises(UsageError, match="does not exist"):
    import_text.import_text([str(tmp_path / "missing.txt")], speech, str(tmp_path / "o"))
  with pytest.raises(UsageError, match="no text"):
    import_text.import_text([_write(tmp_path, "empty.txt", "\n \n\n")], speech, str(tmp_path / "o"))
  assert not os.path.exists(tmp_path / "o")


def test_cli(speech, tmp_path, capsys):
  a = _write(tmp_path, "a.txt", TEXT)
  assert import_text.main([f"--text={a}", f"--like={speech}", f"--output_dir={tmp_path / 'text'}"]) == 0
  assert "wrote 3 text examples" in capsys.readouterr().out
  assert import_text.main([f"--text={a}", f"--like={tmp_path}", "--output_dir=/nonexistent/x"]) == 2
  assert "no token dataset" in capsys.readouterr().err
