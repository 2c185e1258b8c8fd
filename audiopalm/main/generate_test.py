"""audiopalm.main.generate end to end with tiny random models and the bundled tokenizers: transcripts for every readable
input, WAVs as long as their semantic tokens, bad inputs reported."""

import dataclasses
import json
import pathlib

import pytest
import soundfile

from audiopalm.inference.audio_tokens import tokenizer_for
from audiopalm.inference.tiny_models import export_tiny_set, tiny_spec
from audiopalm.main import generate
from audiopalm.main.presets import model_preset

TEST_AUDIO = pathlib.Path(__file__).resolve().parents[2] / "audiopalm/data/assets/demo_speech/test/101/10102"
SAMPLES_PER_TOKEN = 16000 // 25


@pytest.fixture(scope="module")
def models(tmp_path_factory):
  root = tmp_path_factory.mktemp("generate_models")
  return export_tiny_set(str(root), model_preset("tiny"), seed=4)


def _stage_flags(models, out):
  return [f"--model={models['main']}", f"--coarse_model={models['coarse']}", f"--fine_model={models['fine']}",
          f"--output={out}", "--max_seconds=0.6"]


def test_asr_transcribes_every_readable_file(models, tmp_path, capsys):
  broken = tmp_path / "broken.flac"
  broken.write_bytes(b"not audio")
  files = sorted(TEST_AUDIO.glob("*.flac"))[:2]
  out = tmp_path / "asr.jsonl"
  argv = ["asr", f"--model={models['main']}", f"--output={out}", "--max_text_tokens=8"]
  status = generate.main(argv + [f"--audio={f}" for f in files] + [f"--audio={broken}"])
  assert status == 1  # one input failed, the others were transcribed
  records = [json.loads(line) for line in out.read_text().splitlines()]
  assert [r["audio"] for r in records] == [str(f) for f in files]
  captured = capsys.readouterr()
  assert "FAILED" in captured.err and str(broken) in captured.err
  assert all(f"{f}\t" in captured.out for f in files)


def test_tts_and_continuation_write_waveforms_of_their_tokens(models, tmp_path):
  out = tmp_path / "tts"
  voice = sorted(TEST_AUDIO.glob("*.flac"))[0]
  status = generate.main(["tts", *_stage_flags(models, out), "--text=turn left", "--text=push the red box",
                          f"--voice_prompt={voice}", "--voice_prompt_seconds=1"])
  assert status == 0
  records = [json.loads(line) for line in (out / "generated.jsonl").read_text().splitlines()]
  assert [r["text"] for r in records] == ["turn left", "push the red box"]
  for r in records:
    audio, rate = soundfile.read(r["wav"])
    assert rate == 16000 and audio.shape == (r["semantic_tokens"] * SAMPLES_PER_TOKEN,)

  out = tmp_path / "continue"
  status = generate.main(["continue", *_stage_flags(models, out), f"--audio={voice}", "--prompt_seconds=0.5",
                          "--seconds=0.4"])
  assert status == 0
  (record,) = [json.loads(line) for line in (out / "generated.jsonl").read_text().splitlines()]
  audio, _ = soundfile.read(record["wav"])
  assert record["prompt_seconds"] == 0.5 and 0 < record["semantic_tokens"] <= 10
  assert audio.shape == (8000 + record["semantic_tokens"] * SAMPLES_PER_TOKEN,)


def test_a_tokenizer_of_other_tokens_is_refused(models, tmp_path, capsys):
  codec = pathlib.Path(__file__).resolve().parents[2] / "audiopalm/data/assets/demo_codec"
  status = generate.main(["asr", f"--model={models['main']}", f"--audio={TEST_AUDIO}",
                          f"--semantic_tokenizer={codec}"])
  assert status == 2
  assert "is not a semantic tokenizer" in capsys.readouterr().err
  spec = tiny_spec("speech_text")
  other = dataclasses.replace(spec, semantic=dataclasses.replace(spec.semantic, tokenizer="semantic-other"))
  with pytest.raises(ValueError, match="no semantic tokenizer with the model's identity 'semantic-other'"):
    tokenizer_for(other, "semantic", search=[str(tmp_path)])
