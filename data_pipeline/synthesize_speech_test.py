"""Generated training speech: reproducible, never a held-out sentence, written whole or not at all."""

import json
import pathlib
import subprocess
import sys

import pytest
import soundfile as sf

from data_pipeline import synthesize_speech
from data_pipeline.synthetic import corpus, espeak, grammar

ROOT = pathlib.Path(__file__).resolve().parents[1]
BUNDLED_TEST = ROOT / "audiopalm" / "data" / "assets" / "demo_speech" / "test"


def _transcripts(root: pathlib.Path) -> dict[str, str]:
  return dict(line.split(" ", 1) for trans in root.rglob("*.trans.txt") for line in trans.read_text().splitlines())


def test_generated_speech_is_reproducible_and_never_a_held_out_sentence(tmp_path, capsys):
  args = ["--num_utterances=24", "--speakers=12"]
  for name, count in (("a", 24), ("b", 24), ("c", 10)):  # each as its own process, as the main job runs it
    subprocess.run([sys.executable, "-m", "data_pipeline.synthesize_speech", f"--output_dir={tmp_path / name}",
                    "--speakers=12", f"--num_utterances={count}"], check=True, capture_output=True, cwd=ROOT)
  a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
  flacs = sorted(p.relative_to(a) for p in a.rglob("*.flac"))
  assert len(flacs) == 24 and not (tmp_path / "a.partial").exists()
  assert all((a / f).read_bytes() == (b / f).read_bytes() for f in flacs)  # same command, same bytes
  prefix = sorted(p.relative_to(c) for p in c.rglob("*.flac"))
  assert len(prefix) == 10 and all((a / f).read_bytes() == (c / f).read_bytes() for f in prefix)
  assert all(sf.info(a / f).samplerate == 16000 and sf.info(a / f).duration > 0.5 for f in flacs)
  texts = _transcripts(a / "train")
  assert sorted(texts) == sorted(f.stem for f in flacs)
  held_out = grammar.held_out_pairs(0)
  assert not any(grammar.says_held_out_pair(t, held_out) for t in texts.values())
  assert not set(texts.values()) & set(_transcripts(BUNDLED_TEST).values())
  info = json.loads((a / synthesize_speech.SYNTHESIS_FILE).read_text())
  assert info["utterances"] == 24 and len(info["speakers"]) == 12 and info["engine_version"]
  assert len({s["voice"] for s in info["speakers"]}) >= 10
  # A rerun with the same settings keeps the corpus; other settings need --overwrite.
  assert synthesize_speech.main([f"--output_dir={a}", *args]) == 0 and "kept" in capsys.readouterr().out
  assert synthesize_speech.main([f"--output_dir={a}", "--num_utterances=5"]) == 2
  assert "--overwrite" in capsys.readouterr().err and len(list(a.rglob("*.flac"))) == 24


def test_generated_speakers_start_with_the_bundled_voices_and_every_voice_exists():
  speakers = corpus.generated_speakers(60, seed=1)
  assert [s.espeak_voice for s in speakers[:10]] == [s.espeak_voice for s in corpus.SPEAKERS]
  assert len({s.speaker_id for s in speakers}) == 60 and min(s.speaker_id for s in speakers) == 201
  assert speakers == corpus.generated_speakers(60, seed=1) != corpus.generated_speakers(60, seed=2)
  espeak.EspeakLibrary().check_voices(sorted({s.espeak_voice for s in speakers}))
  with pytest.raises(RuntimeError, match="no voice"):
    espeak.EspeakLibrary().check_voices(["en-us+nosuchvariant"])


def test_a_leaking_grammar_is_refused(monkeypatch, tmp_path):
  monkeypatch.setattr(synthesize_speech, "says_held_out_pair", lambda text, held_out: True)
  with pytest.raises(RuntimeError, match="held-out"):
    synthesize_speech.main([f"--output_dir={tmp_path / 'x'}", "--num_utterances=3"])
  assert not (tmp_path / "x").exists()
