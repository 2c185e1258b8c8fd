"""README.md's set-up and test commands are exactly what CI runs."""

import json
import os
import pathlib
import re
import shlex
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_commands():
  readme = (ROOT / "README.md").read_text()
  block = re.search(r"```bash\n(.*?)```", readme, flags=re.S).group(1)
  commands = [line for line in block.splitlines() if line and not line.startswith("#")]
  assert len(commands) == 3, "README opens with three commands: set-up, tests, main job"
  ci = (ROOT / ".ci" / "run").read_text()
  setup, tests, _ = commands
  assert setup in ci and tests in ci


# The README's main job at CI size: a few steps per model, 2 held-out utterances evaluated.
CI_SIZE = ["--text_steps=10", "--speech_steps=10", "--coarse_steps=3", "--fine_steps=3", "--eval_examples=2", "--generated_utterances=20",
           "--unit_encoder_steps=5"]


@pytest.mark.slow
def test_the_readme_main_job_runs_end_to_end_and_resumes(tmp_path):
  """The third command, verbatim plus CI_SIZE, from a working directory holding the checkout's files (so `runs/`
  lands there): every step runs, every artefact is there, the summary names them; a rerun keeps every step."""
  readme = (ROOT / "README.md").read_text()
  block = re.search(r"```bash\n(.*?)```", readme, flags=re.S).group(1)
  main_job = [line for line in block.splitlines() if line and not line.startswith("#")][2]
  assert main_job == ".venv/bin/python -m audiopalm.main.pipeline --workdir=runs/main"
  for name in (".venv", "audiopalm", "gin_configs", "tools", "data_pipeline"):
    (tmp_path / name).symlink_to(ROOT / name)
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # one CPU device, as a user would run it
  runs = []
  for attempt in ("first run", "rerun (resumes)"):
    out = subprocess.run(shlex.split(main_job) + CI_SIZE, cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=1500)
    assert out.returncode == 0, f"{attempt}: {out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    runs.append(out.stdout)
  work = tmp_path / "runs" / "main"
  summary = json.loads((work / "summary.json").read_text())
  assert all(s["seconds_this_run"] is None for s in summary["steps"].values())  # the rerun kept every step
  assert runs[1].count("done earlier, kept") == 12 and "[12/12] evaluate: held-out" in runs[0]
  for path in ("speech/synthesis.json", "unit_encoder/config.json", "semantic/semantic_tokenizer.json",
               "tokens/train/metadata.json", "tokens/test/metadata.json", "tokens/text/metadata.json",
               "text/export/model_config.json",
               "speech_text/checkpoints/10", "coarse/checkpoints/3", "fine/checkpoints/3", "export/manifest.json",
               "export/lm/hf/config.json", "eval/test.json", "samples/0000.wav", "samples/0001.wav"):
    assert (work / path).exists(), path
  assert json.loads((work / "tokens" / "train" / "stats.json").read_text())["totals"]["examples"] == 380
  ev = summary["evaluation"]
  assert ev["step"] == 10 and ev["utterances"] == 2 and 0 <= ev["asr_wer"] and ev["chance_wer"] > 0
  assert set(ev["perplexity"]) == {"asr", "tts", "continuation", "text_lm"}
  assert "| ASR WER / CER |" in runs[0] and "Synthesized 2 held-out sentences" in runs[0]
  # Every held-out sentence evaluated is synthesized, listed, and judged by the independent recognizer.
  generated = [json.loads(line) for line in (work / "samples" / "generated.jsonl").read_text().splitlines()]
  assert len(generated) == 2 and all({"text", "wav", "recognizer_transcript"} <= set(g) for g in generated)
  assert set(ev["stage_nll_per_level"]["coarse"]) == {"0", "1", "2", "3"}  # the stages' held-out loss per level
  judge = ev["recognizer_wer"]
  assert all(judge[k] is not None for k in ("original", "codec", "tts", "tts_to_original"))
