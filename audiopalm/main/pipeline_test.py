"""The main job's control flow with stand-in steps (stdlib modules): order, resume, rerun on change, failure
reports. The real pipeline runs end to end in tests/readme_test.py (the README's main job)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from audiopalm.main import pipeline
from audiopalm.main.pipeline import Step

OK = ("platform",)  # `python -m platform`: prints this platform, exits 0
FAIL = ("json.tool", "/nonexistent/input.json")  # exits 2 with the reason on stderr


def _steps(second=OK, first=OK):
  return [Step("a", "first", "out/a", first), Step("b", "second", "out/b", second), Step("c", "third", "out/c", OK)]


def _ran(summary):
  return [name for name, s in summary["steps"].items() if s["seconds_this_run"] is not None]


def test_a_failed_step_reports_its_log_and_a_rerun_resumes_there(tmp_path, capsys):
  with pytest.raises(RuntimeError, match=r"step b failed \(exit 2\)") as failure:
    pipeline.run(str(tmp_path), _steps(second=FAIL))
  assert "nonexistent" in str(failure.value) and "rerun the same command" in str(failure.value)
  assert (tmp_path / ".steps" / "a.json").exists() and not (tmp_path / ".steps" / "b.json").exists()
  assert _ran(pipeline.run(str(tmp_path), _steps())) == ["b", "c"]  # a is kept
  assert "a: done earlier, kept (out/a)" in capsys.readouterr().out
  summary = pipeline.run(str(tmp_path), _steps())
  assert _ran(summary) == []  # everything kept
  assert json.loads((tmp_path / "summary.json").read_text()) == summary
  assert (tmp_path / "logs" / "b.log").read_text().count("=== ") == 2  # the failed try and the good one


def test_a_changed_step_reruns_with_everything_after_it(tmp_path):
  pipeline.run(str(tmp_path), _steps())
  assert _ran(pipeline.run(str(tmp_path), _steps(second=("platform", "--terse")))) == ["b", "c"]
  assert _ran(pipeline.run(str(tmp_path), _steps(first=("platform", "--terse"), second=("platform", "--terse")))) == [
      "a", "b", "c"]


def test_an_interrupted_rerun_never_keeps_steps_made_from_old_output(tmp_path):
  """Run 2 changes a; b then fails. Run 3 must redo b and c (made from a's old output), not keep them."""
  pipeline.run(str(tmp_path), _steps())
  with pytest.raises(RuntimeError, match="step b failed"):
    pipeline.run(str(tmp_path), _steps(first=("platform", "--terse"), second=FAIL))
  assert not (tmp_path / ".steps" / "c.json").exists()
  assert _ran(pipeline.run(str(tmp_path), _steps(first=("platform", "--terse")))) == ["b", "c"]


def test_a_step_older_than_a_step_before_it_is_redone(tmp_path):
  """A run of a subset (as tools.benchmark_speech_demo runs) redoes b without c: the next full run must redo c,
  made from b's old output, though c's own command is unchanged."""
  pipeline.run(str(tmp_path), _steps())
  subset = _steps(second=("platform", "--terse"))[:2]
  assert _ran(pipeline.run(str(tmp_path), subset)) == ["b"]
  assert _ran(pipeline.run(str(tmp_path), _steps(second=("platform", "--terse")))) == ["c"]


def test_a_step_that_exits_cleanly_before_finishing_is_not_marked_done(tmp_path):
  """A preempted training run exits 0 without its last checkpoint: the step stays to be resumed."""
  unfinished = Step("train", "a run", "out/train", OK, finished_when=str(tmp_path / "checkpoints" / "10"))
  with pytest.raises(RuntimeError, match="exited before finishing"):
    pipeline.run(str(tmp_path), [unfinished])
  assert not (tmp_path / ".steps" / "train.json").exists()
  (tmp_path / "checkpoints" / "10").mkdir(parents=True)
  assert _ran(pipeline.run(str(tmp_path), [unfinished])) == ["train"]


def test_a_fresh_step_starts_from_an_empty_directory(tmp_path, monkeypatch):
  """A step that refuses an existing output (the unit encoder, the k-means fit) is rerun from scratch."""
  monkeypatch.chdir(tmp_path)
  (tmp_path / "out" / "a").mkdir(parents=True)
  (tmp_path / "out" / "a" / "config.json").write_text("{}")
  pipeline.run("work", [Step("a", "first", "out/a", OK, fresh=True)])
  assert not (tmp_path / "out" / "a").exists()


def test_the_real_steps_chain_their_outputs():
  steps = pipeline.steps("runs/main", text_steps=200, speech_steps=1000, coarse_steps=100, fine_steps=50,
                         eval_examples=None,
                         generated_utterances=4000)
  assert [s.name for s in steps] == ["speech", "unit_encoder", "semantic", "tokens_train", "tokens_test", "tokens_text",
                                     "text", "speech_text", "coarse", "fine", "export", "evaluate"]
  by = {s.name: " ".join(s.command) for s in steps}
  # Generated speech beside the bundled training split, tokenized together into the one training dataset, with
  # the semantic tokenizer fitted on it: the units of an encoder trained with CTC on its transcripts.
  assert "--output_dir=runs/main/speech --num_utterances=4000" in by["speech"]
  assert "unit_encoder_demo.gin --gin.GENERATED='runs/main/speech/train' --gin.OUTPUT_DIR='runs/main/unit_encoder'" \
      in by["unit_encoder"] and f"CtcTrainConfig.steps={pipeline.UNIT_ENCODER_STEPS}" in by["unit_encoder"]
  assert "--gin.ENCODER_PATH='runs/main/unit_encoder'" in by["semantic"]
  assert "--gin.OUTPUT_DIR='runs/main/semantic'" in by["semantic"]
  assert all(s.fresh == (s.name in ("unit_encoder", "semantic")) for s in steps)  # not resumable: redone whole
  assert "demo_generated.gin --gin.GENERATED='runs/main/speech/train' --gin.SEMANTIC_TOKENIZER='runs/main/semantic'" \
      in by["tokens_train"] and "--gin.OUTPUT_DIR='runs/main/tokens/train'" in by["tokens_train"]
  assert "demo_test.gin --gin.SEMANTIC_TOKENIZER='runs/main/semantic'" in by["tokens_test"]
  without = pipeline.steps("runs/main", 200, 1000, 100, 50, None, generated_utterances=0)
  assert [s.name for s in without][:2] == ["tokens_train", "tokens_test"] and "demo.gin" in without[0].command[1]
  assert not any("SEMANTIC_TOKENIZER" in " ".join(s.command) for s in without)  # the bundled MFCC units
  assert "--gin.INIT_DIR='runs/main/text'" in by["speech_text"] and "TRAIN_STEPS=1000" in by["speech_text"]
  # The regularisation for 360 utterances only without generated speech (docs/benchmarks.md, "Which units").
  assert "experiments/speech_text_generated_demo.gin" in by["speech_text"]
  assert "experiments/speech_text_from_text_demo.gin" in " ".join(next(s for s in without if s.name == "speech_text").command)
  assert by["coarse"].count("TOKENS_DIR='runs/main/tokens/train'") == 1
  assert "--like=runs/main/tokens/train" in by["tokens_text"]
  assert "--output_dir=runs/main/tokens/text" in by["tokens_text"]
  assert "--gin.TEXT_DIR='runs/main/tokens/text'" in by["speech_text"]
  assert "--models=lm=runs/main/speech_text" in by["export"]
  assert "--model=runs/main/export/lm" in by["evaluate"] and "--tokens_dir=runs/main/tokens/test" in by["evaluate"]
  assert "--max_examples" not in by["evaluate"]
  finished = {s.name: s.finished_when for s in steps}
  assert finished["speech_text"] == "runs/main/speech_text/checkpoints/1000"
  assert finished["coarse"] == "runs/main/coarse/checkpoints/100" and finished["export"] is None
  assert finished["fine"] == "runs/main/fine/checkpoints/50"
  # Every held-out sentence is synthesized (voiced like a held-out recording) and judged by the recognizer.
  for flag in (f"--voice_prompt={pipeline.SYNTH_VOICE}", "--samples_dir=runs/main/samples", "--samples=all",
               f"--recognizer_text={pipeline.DEMO_TEXT}", "resynthesis,intelligibility,stages"):
    assert flag in by["evaluate"], flag
  assert "/test/" in pipeline.SYNTH_VOICE and (pipeline.ROOT / pipeline.SYNTH_VOICE).exists()


def test_summary_table():
  steps = {"text": {"artefact": "runs/main/text", "what": "", "seconds_this_run": 3.2},
           "export": {"artefact": "runs/main/export", "what": "", "seconds_this_run": None}}
  summary = {"workdir": "runs/main", "steps": steps,
             "evaluation": {"step": 1000, "utterances": 40, "asr_wer": 0.5, "asr_cer": 0.25, "chance_wer": 0.97,
                            "perplexity": {"asr": 1.6}, "perplexity_overall": 6.3, "tts_roundtrip_wer": None,
                            "tts_semantic_roundtrip_wer": 0.9,
                            "recognizer_wer": {"original": 0.3, "codec": 0.32, "stages": 0.36, "tts": 0.42,
                                               "tts_to_original": 1.4},
                            "stage_nll_per_level": {"coarse": {"0": 3.5, "1": 4.0}, "fine": {}}},
             "samples": {"manifest": "runs/main/samples/generated.jsonl", "count": 40, "seconds": 80.0,
                         "first": {"wav": "runs/main/samples/0000.wav", "seconds": 2.5, "text": "MOVE THE BOX"}}}
  text = pipeline.format_summary(summary)
  for line in ("| text | runs/main/text | 3 s |", "| export | runs/main/export | kept |",
               "| ASR WER / CER | 0.500 / 0.250 |",
               "| TTS round-trip WER (audio / semantic tokens) | – / 0.900 |", "| perplexity, asr | 1.600 |",
               "40 test utterances, speech_text step 1000", "| 0.300 / 0.320 / 0.360 / 0.420 |", "| 1.400 |",
               "| coarse stage held-out loss per token, levels 0, 1 (uniform 5.545) | 3.500 / 4.000 |",
               "Synthesized 40 held-out sentences (80.000 s), listed in runs/main/samples/generated.jsonl; the "
               "first: runs/main/samples/0000.wav: 'MOVE THE BOX'"):
    assert line in text, line


@pytest.mark.parametrize("flag", ["--speech_steps=0", "--text_steps=-1", "--eval_examples=0"])
def test_bad_settings_are_refused(flag, capsys):
  with pytest.raises(SystemExit) as exit_:
    pipeline.main([flag])
  assert exit_.value.code == 2 and flag.split("=")[0] in capsys.readouterr().err


def test_sigterm_reaches_the_running_step(tmp_path):
  """A preemption notice to the pipeline stops the step it is running (no orphan keeps writing) and the step
  is left to resume."""
  pid_file = tmp_path / "child.pid"
  body = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(120)"
  script = ("import sys; from audiopalm.main import pipeline\n"
            f"step = pipeline.Step('slow', 'sleeps', 'x', ('timeit', '-n', '1', {body!r}))\n"
            f"try:\n  pipeline.run({str(tmp_path)!r}, [step])\nexcept RuntimeError as e:\n  print(e); sys.exit(1)\n")
  proc = subprocess.Popen([sys.executable, "-c", script], cwd=pipeline.ROOT, stdout=subprocess.PIPE, text=True)
  deadline = time.monotonic() + 60
  while not pid_file.exists() or not pid_file.read_text():
    assert time.monotonic() < deadline and proc.poll() is None, "the step did not start"
    time.sleep(0.1)
  proc.send_signal(signal.SIGTERM)
  out, _ = proc.communicate(timeout=60)
  assert proc.returncode == 1 and "step slow was stopped (SIGTERM)" in out
  child = int(pid_file.read_text())
  with pytest.raises(ProcessLookupError):
    os.kill(child, 0)
  assert not (tmp_path / ".steps" / "slow.json").exists()
