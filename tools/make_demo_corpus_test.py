"""Tests of the demo corpus tool and of the bundled corpus it made (needs espeak-ng for the first)."""

import collections
import os
import pathlib
import re
import shutil

import numpy as np
import pytest
import soundfile as sf

from data_pipeline.synthetic import corpus, espeak, grammar
from tools import make_demo_corpus

BUNDLE = pathlib.Path(__file__).resolve().parents[1] / "audiopalm" / "data" / "assets" / "demo_speech"
MAX_BUNDLE_BYTES = 10 * 1024 * 1024


def _transcripts(root: pathlib.Path) -> dict[pathlib.Path, str]:
  """Relative FLAC path -> transcript, from every `*.trans.txt` under `root`."""
  out = {}
  for trans in sorted(root.rglob("*.trans.txt")):
    for line in trans.read_text(encoding="utf-8").splitlines():
      utt_id, text = line.split(" ", 1)
      out[(trans.parent / f"{utt_id}.flac").relative_to(root)] = text
  return out


def _bundle_espeak_version() -> str:
  match = re.search(r"espeak-ng (\S+) \(", (BUNDLE / "README.md").read_text(encoding="utf-8"))
  return match.group(1) if match else "unknown"


# CI installs espeak-ng and sets this, so there the test always runs; elsewhere it is skipped (with the reason)
# when espeak-ng is not installed.
_REQUIRE_ESPEAK = os.environ.get("AUDIOPALM_REQUIRE_ESPEAK") == "1"


@pytest.mark.skipif(not _REQUIRE_ESPEAK and shutil.which("espeak-ng") is None,
                    reason="espeak-ng is not installed (apt-get install espeak-ng); CI runs this test")
def test_regenerated_prefix_is_byte_identical_to_bundle(tmp_path, capsys):
  make_demo_corpus.main(["--output_dir", str(tmp_path), "--num_train", "3", "--num_test", "2"])
  capsys.readouterr()
  version = espeak.EspeakProgram("espeak-ng").version
  hint = f"(bundle made with espeak-ng {_bundle_espeak_version()}, this is espeak-ng {version})"
  flacs = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.flac"))
  assert [p.parts[0] for p in flacs].count("train") == 3 and [p.parts[0] for p in flacs].count("test") == 2
  for rel in flacs:
    new, old = (tmp_path / rel).read_bytes(), (BUNDLE / rel).read_bytes()
    if new != old:
      same_pcm = np.array_equal(sf.read(tmp_path / rel, dtype="int16")[0], sf.read(BUNDLE / rel, dtype="int16")[0])
      pytest.fail(f"{rel} differs from the bundle; decoded samples {'equal' if same_pcm else 'differ'} {hint}")
  bundled = _transcripts(BUNDLE)
  regenerated = _transcripts(tmp_path)
  assert sorted(regenerated) == flacs
  for rel, text in regenerated.items():
    assert bundled[rel] == text, f"{rel}: transcript {text!r} != bundled {bundled[rel]!r}"


def test_bundled_corpus_layout():
  transcripts = _transcripts(BUNDLE)
  flacs = {p.relative_to(BUNDLE) for p in BUNDLE.rglob("*.flac")}
  assert flacs == set(transcripts), "every FLAC needs a transcript line and every line a FLAC"
  per_split = collections.Counter(rel.parts[0] for rel in flacs)
  assert set(per_split) == {"train", "test"} and min(per_split.values()) > 0
  for rel in flacs:
    split, speaker, chapter, name = rel.parts
    assert re.fullmatch(rf"{speaker}-{chapter}-\d{{4}}\.flac", name), rel
    info = sf.info(BUNDLE / rel)
    assert (info.samplerate, info.channels, info.format, info.subtype) == (16000, 1, "FLAC", "PCM_16"), rel
  assert all(re.fullmatch(r"[A-Z]+( [A-Z]+)*", text) for text in transcripts.values())
  total = sum(p.stat().st_size for p in BUNDLE.rglob("*") if p.is_file())
  assert total <= MAX_BUNDLE_BYTES, f"bundle is {total / 1e6:.2f} MB"
  words = {split: {w for rel, t in transcripts.items() if rel.parts[0] == split for w in t.split()}
           for split in ("train", "test")}
  assert words["test"] <= words["train"], words["test"] - words["train"]
  train_texts = {t for rel, t in transcripts.items() if rel.parts[0] == "train"}
  test_texts = [t for rel, t in transcripts.items() if rel.parts[0] == "test"]
  assert sum(t not in train_texts for t in test_texts) >= 0.9 * len(test_texts)


def test_sentences_respect_held_out_pairs_and_vocabulary():
  held_out = grammar.held_out_pairs(0)
  vocabulary = set(grammar.vocabulary())
  assert 40 <= len(vocabulary) <= 80
  for split in ("train", "test"):
    for index in range(50):
      utt = corpus.plan_utterance(0, split, index, held_out)
      words = utt.text.split()
      assert set(words) <= vocabulary
      bigrams = set(zip(words, words[1:]))
      plural_bigrams = {(c, grammar.PLURALS[o]) for c, o in held_out}
      assert bool(bigrams & (held_out | plural_bigrams)) == (split == "test"), utt.text
      assert grammar.says_held_out_pair(utt.text, held_out) == (split == "test"), utt.text
      assert utt == corpus.plan_utterance(0, split, index, held_out)


def test_audio_helpers():
  speech = np.where(np.arange(2000) % 2 == 0, 3.0, -3.0)
  audio = np.concatenate([np.zeros(1000), speech, np.zeros(50)])
  trimmed = corpus.trim_silence(audio, 1000, keep_s=0.1)  # keeps 100 samples each side
  np.testing.assert_array_equal(trimmed, np.concatenate([np.zeros(100), speech, np.zeros(100)]))
  pcm = corpus.to_int16(audio, peak=1.0, bits=12)
  assert pcm.dtype == np.int16 and np.all(pcm % 16 == 0) and pcm.max() > 32000 and pcm.min() < -32000
  assert np.abs(corpus.to_int16(audio, peak=0.5)).max() == 16384


def test_missing_espeak_says_how_to_install():
  with pytest.raises(RuntimeError, match="apt-get install espeak-ng"):
    espeak.EspeakProgram("no-such-espeak-ng-binary")


def test_refuses_to_overwrite_without_flag(tmp_path):
  (tmp_path / "train").mkdir()
  (tmp_path / "train" / "old.txt").write_text("x")
  with pytest.raises(RuntimeError, match="--overwrite"):
    make_demo_corpus.main(["--output_dir", str(tmp_path), "--num_train", "0", "--num_test", "0"])
  assert os.path.exists(tmp_path / "train" / "old.txt")
