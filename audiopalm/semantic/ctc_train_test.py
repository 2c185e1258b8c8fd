"""CTC training of the unit encoder: transcripts, a tiny run that learns and loads, bad input, refusals."""

import json
import pathlib
import shutil

import numpy as np
import pytest

from audiopalm.semantic import ctc_train
from audiopalm.semantic.fit import fit_semantic_tokenizer
from audiopalm.semantic.kmeans import KMeansConfig
from audiopalm.semantic.tokenizer import load_semantic_tokenizer
from audiopalm.semantic.unit_aligner import UnitAligner
from audiopalm.ssl import ctc_encoder as ctc_lib
from audiopalm.ssl.load import load_encoder

ROOT = pathlib.Path(__file__).resolve().parents[2]
TEST_SPLIT = ROOT / "audiopalm/data/assets/demo_speech/test"
TINY = ctc_lib.CtcEncoderConfig(width=32, num_layers=2, kernel_size=5)


def test_read_transcripts_pairs_each_recording_with_its_line():
  transcripts = ctc_train.read_transcripts([str(TEST_SPLIT)])
  assert len(transcripts) == 40
  path = str(TEST_SPLIT / "102/10202/102-10202-0000.flac")
  line = (TEST_SPLIT / "102/10202/102-10202.trans.txt").read_text().splitlines()[0]
  assert transcripts[path] == line.split(" ", 1)[1].upper()


def test_greedy_decode_merges_repeats_and_drops_blanks():
  alphabet = " AB"  # outputs: 0 blank, 1 ' ', 2 'A', 3 'B'
  best = [2, 2, 0, 2, 3, 1, 1, 0, 3, 0]
  logits = np.eye(4)[best]
  assert ctc_train.greedy_decode(logits, alphabet) == "AAB B"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """40 held-out recordings, one copied as an undecodable file with a transcript: a tiny encoder, 40 steps."""
  corpus = tmp_path_factory.mktemp("corpus")
  shutil.copytree(TEST_SPLIT / "101", corpus / "101")
  chapter = next((corpus / "101").iterdir())
  (chapter / "101-99-0000.flac").write_bytes(b"not audio")
  (chapter / "101-99.trans.txt").write_text("101-99-0000 BROKEN\n")
  out = tmp_path_factory.mktemp("encoder") / "enc"
  config = ctc_train.CtcTrainConfig(steps=40, batch_size=4, warmup_steps=5, log_every=10, learning_rate=3e-3)
  summary = ctc_train.train_ctc_encoder(audio_paths=[str(corpus)], output_dir=str(out), encoder=TINY, config=config)
  return corpus, out, summary


def test_a_tiny_run_learns_skips_bad_files_and_writes_a_loadable_encoder(trained):
  corpus, out, summary = trained
  assert summary["recordings"] == 4 and len(summary["skipped"]) == 1 and "101-99-0000.flac" in summary["skipped"][0][0]
  history = [h["loss_per_character"] for h in summary["history"]]
  assert len(history) == 4 and history[-1] < 0.7 * history[0], history
  assert set(summary["encoder"]["alphabet"]) == set("".join(
      line.split(" ", 1)[1] for t in corpus.rglob("*.trans.txt") if "101-99" not in t.name
      for line in t.read_text().splitlines()))
  references, hypotheses = ctc_train.transcribe(str(out), [str(corpus)])  # the broken file left out
  assert len(references) == len(hypotheses) == 4 and "BROKEN" not in references
  assert all(set(h) <= set(summary["encoder"]["alphabet"]) for h in hypotheses)
  assert json.loads((out / ctc_train.SUMMARY_FILE).read_text())["history"] == summary["history"]
  encoder = load_encoder(str(out))
  assert encoder.config.alphabet == summary["encoder"]["alphabet"] and encoder.num_layers == 2
  with pytest.raises(FileExistsError, match="already trained there"):
    ctc_train.train_ctc_encoder(audio_paths=[str(corpus)], output_dir=str(out), encoder=TINY)


def test_its_units_make_a_semantic_tokenizer(trained, tmp_path):
  corpus, out, _ = trained
  fit_semantic_tokenizer(encoder_path=str(out), layer=2, audio_paths=[str(corpus)], output_dir=str(tmp_path / "sem"),
                         downsample=1, kmeans=KMeansConfig(num_clusters=8, batch_size=256, max_iters=5),
                         copy_encoder=True)
  tokenizer = load_semantic_tokenizer(str(tmp_path / "sem"))
  assert tokenizer.frame_rate == 25 and tokenizer.vocab_size == 8
  codes, lengths = tokenizer.encode(np.zeros((1, 16000), np.float32), np.array([16000], np.int32))
  assert int(lengths[0]) == 24 and np.asarray(codes).max() < 8
  # Its units read as characters: the CTC head on each centroid (unit_aligner).
  aligner = UnitAligner.from_tokenizer(tokenizer)
  assert aligner.log_probs.shape == (8, 1 + len(tokenizer.encoder.config.alphabet)) and aligner.frame_rate == 25
  np.testing.assert_allclose(np.exp(aligner.log_probs).sum(-1), 1.0, rtol=1e-6)
  assert set(aligner.transcribe(np.asarray(codes)[0, :, 0])) <= set(tokenizer.encoder.config.alphabet)
  fit_semantic_tokenizer(encoder_path=str(out), layer=1, audio_paths=[str(corpus)], output_dir=str(tmp_path / "l1"),
                         downsample=1, kmeans=KMeansConfig(num_clusters=8, batch_size=256, max_iters=2))
  with pytest.raises(ValueError, match="the CTC head reads layer 2"):
    UnitAligner.from_tokenizer(load_semantic_tokenizer(str(tmp_path / "l1"), encoder_path=str(out)))


def test_no_usable_recordings_and_bad_settings_are_refused(tmp_path):
  (tmp_path / "a").mkdir()
  with pytest.raises(ValueError, match="no transcribed recordings"):
    ctc_train.train_ctc_encoder(audio_paths=[str(tmp_path / "a")], output_dir=str(tmp_path / "out"))
  with pytest.raises(ValueError, match=r"warmup_steps must be in \[0, steps=10\)"):
    ctc_train.CtcTrainConfig(steps=10, warmup_steps=10)
  with pytest.raises(ValueError, match="batch_size must be >= 1"):
    ctc_train.CtcTrainConfig(batch_size=0)
