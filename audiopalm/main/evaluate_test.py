"""audiopalm.main.evaluate end to end on the demo tokens with tiny random models: every metric reported, in JSON and
TensorBoard; the ASR WER computed from the model's own transcripts; bad metric choices refused."""

import json

import numpy as np
import pytest
import tensorflow as tf

from audiopalm.checkpoints.source import RUN_CONFIG_FILE
from audiopalm.data.mixture import MixtureComponent
from audiopalm.data.speech_text_source import SpeechTextConfig
from audiopalm.evaluation import speech_metrics
from audiopalm.evaluation.wer import error_rates
from audiopalm.inference.models import load_model
from audiopalm.inference.speech import SpeechConfig, SpeechTasks
from audiopalm.formats.audiopalm_tasks import ContinuationConfig
from audiopalm.inference.tiny_models import export_tiny_set
from audiopalm.main import evaluate
from audiopalm.main.presets import model_preset
from audiopalm.main.train import run_config


DEMO_TEXT = "audiopalm/data/assets/demo_text.txt"
VOICE = "audiopalm/data/assets/demo_speech/test/102/10202/102-10202-0000.flac"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
  """The tiny models as a trained run exports them: the main one carries its run's config (`train_config.json`),
  whose mixture prompts continuation with 30-70% of each utterance (the demo's utterances are shorter than the
  format's default 3 s prompt)."""
  root = tmp_path_factory.mktemp("evaluate_models")
  paths = export_tiny_set(str(root), model_preset("tiny"), seed=7)
  continuation = MixtureComponent(format="continuation", dataset="unused",
                                  config=ContinuationConfig(prefix_fraction=(0.3, 0.7)))
  config = run_config(data=SpeechTextConfig(components=(continuation,), seq_len=evaluate.DEFAULT_SEQ_LEN))
  (root / "main" / RUN_CONFIG_FILE).write_text(json.dumps(config))
  return paths


@pytest.mark.slow
def test_every_metric_to_json_and_tensorboard(models, demo_tokens, tmp_path, capsys):
  out, tb = tmp_path / "eval.json", tmp_path / "tb"
  status = evaluate.main([f"--model={models['main']}", f"--coarse_model={models['coarse']}",
                          f"--fine_model={models['fine']}", f"--tokens_dir={demo_tokens}", "--split=train",
                          "--max_examples=3", "--samples=2", f"--output={out}", f"--tensorboard_dir={tb}",
                          f"--voice_prompt={VOICE}", f"--recognizer_text={DEMO_TEXT}",
                          f"--samples_dir={tmp_path / 'samples'}"])
  assert status == 0
  report = json.loads(out.read_text())
  results = report["results"]
  assert set(results) == set(evaluate.METRICS) and report["examples"] == 3
  assert set(results["perplexity"]["tasks"]) == {"asr", "tts", "continuation", "text_lm"}
  for task in results["perplexity"]["tasks"].values():
    assert task["tokens"] > 0 and task["perplexity"] > 1
  for name, keys in {"asr": ("wer", "cer", "chance_wer"), "tts": ("semantic_roundtrip_wer", "wer", "length_ratio"),
                     "codec": ("mel_distance", "si_snr_db"), "resynthesis": ("wer", "reference_wer", "recognizer_wer"),
                     "intelligibility": ("original_wer", "codec_wer", "tts_wer", "tts_to_original")}.items():
    for key in keys:
      assert np.isfinite(results[name][key]), (name, key)
  assert results["codec"]["utterances"] == 3 and results["codec"]["missing_audio"] == 0
  # The stages' held-out loss per acoustic level: the coarse model predicts levels 0-3, the fine one 4-7.
  stages = results["stages"]
  assert set(stages["coarse"]["levels"]) == {"0", "1", "2", "3"} and set(stages["fine"]["levels"]) == {"4", "5", "6", "7"}
  assert all(np.isfinite(v["nll"]) and v["uniform_nll"] == pytest.approx(np.log(256))
             for stage in ("coarse", "fine") for v in stages[stage]["levels"].values())
  # The independent recognizer judged the originals, the codec's copies and the synthesized speech, which is
  # written out, one WAV and one manifest line per utterance.
  judge = results["intelligibility"]
  assert judge["recognizer"]["vocabulary"] == 63 and judge["utterances"] == 3
  assert judge["tts_to_original"] == pytest.approx(results["tts"]["recognizer_wer"] / judge["original_wer"])
  generated = [json.loads(line) for line in (tmp_path / "samples" / "generated.jsonl").read_text().splitlines()]
  assert [g["text"] for g in generated] == [s["reference"] for s in results["tts"]["recognizer_samples"]] + [
      generated[2]["text"]]
  assert all((tmp_path / "samples" / f"{i:04d}.wav").exists() for i in range(3))

  # The reported ASR error rates are those of the model's transcripts.
  examples = speech_metrics.read_examples(str(demo_tokens), "train", 3)
  hyps = SpeechTasks(load_model(models["main"]), SpeechConfig()).transcribe([e["semantic"] for e in examples])
  assert results["asr"]["wer"] == pytest.approx(error_rates([e["transcript"] for e in examples], hyps).wer)
  assert results["asr"]["samples"] == [{"reference": e["transcript"], "hypothesis": h} for e, h in
                                       zip(examples[:2], hyps[:2])]  # --samples=2: the first two
  assert len(results["tts"]["samples"]) == 2 and len(results["resynthesis"]["samples"]) == 2

  tags = {value.tag for path in tb.glob("events.out.tfevents.*")
          for event in tf.compat.v1.train.summary_iterator(str(path)) for value in event.summary.value}
  assert {"asr/wer", "tts/wer", "codec/si_snr_db", "resynthesis/wer", "perplexity/overall/perplexity",
          "perplexity/tasks/asr/perplexity"} <= tags
  assert "asr wer" in capsys.readouterr().out


def test_bad_metric_choices_are_refused(models, capsys):
  base = [f"--model={models['main']}", "--tokens_dir=unused"]
  assert evaluate.main(base + ["--metrics=asr,bleu"]) == 2
  assert "unknown ['bleu']" in capsys.readouterr().err
  assert evaluate.main(base + ["--metrics=resynthesis"]) == 2
  assert "needs --coarse_model and --fine_model" in capsys.readouterr().err
  assert evaluate.main(base + [f"--coarse_model={models['coarse']}"]) == 2
  assert "give both" in capsys.readouterr().err


def test_samples_flag():
  assert evaluate.parse_args(["--model=m", "--tokens_dir=t"]).samples == speech_metrics.SAMPLES
  assert evaluate.parse_args(["--model=m", "--tokens_dir=t", "--samples=all"]).samples is None
  assert evaluate.parse_args(["--model=m", "--tokens_dir=t", "--samples=0"]).samples == 0
  for bad in ("-1", "some"):
    with pytest.raises(SystemExit):
      evaluate.parse_args(["--model=m", "--tokens_dir=t", f"--samples={bad}"])


def test_tokens_of_other_tokenizers_are_refused(models, tmp_path, capsys):
  """A dataset whose semantic tokens come from another tokenizer than the model read is refused up front."""
  meta = {"tokenizers": {"semantic": {"identity": "semantic-other"}}}
  (tmp_path / "metadata.json").write_text(json.dumps(meta))
  assert evaluate.main([f"--model={models['main']}", f"--tokens_dir={tmp_path}", "--metrics=asr"]) == 2
  assert "its semantic tokens are 'semantic-other'" in capsys.readouterr().err
