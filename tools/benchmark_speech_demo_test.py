"""The benchmark's plan (which runs, with which seeds) and its table; the runs themselves are the benchmark."""

import pytest

from audiopalm.main import pipeline
from tools import benchmark_speech_demo as bench


def test_seed_zero_is_the_main_jobs_run_and_other_seeds_get_their_own():
  chosen, models = bench.plan("w", steps=500, stages=False, seeds=[0, 2])
  main_job = {s.name: s for s in pipeline.steps("w", 200, 500, 100, 100, None)}
  assert models["from_text", 0] == main_job["speech_text"]
  assert [s.name for s in chosen] == ["tokens_train", "tokens_test", "tokens_text", "text", "speech_text", "scratch",
                                      "speech_text_seed2", "scratch_seed2"]
  seeded = " ".join(models["from_text", 2].command)
  assert all(f in seeded for f in ("--gin.SpeechTextConfig.seed=2", "--gin.TrainerConfig.seed=2",
                                   "--gin.InitFromConfig.seed=2", "--gin.INIT_DIR='w/text'", "TRAIN_STEPS=500"))
  scratch = " ".join(models["scratch", 2].command)
  assert "--gin.TrainerConfig.seed=2" in scratch and "InitFromConfig" not in scratch and "INIT_DIR" not in scratch
  assert all(f in scratch and f in seeded for f in pipeline.data_flags("w"))  # the same data for both starts
  assert "seed" not in " ".join(models["scratch", 0].command)
  assert [s.name for s in bench.plan("w", 500, True, [0])[0]][-2:] == ["coarse", "fine"]


def _result(start, seed, wer):
  return {"start": start, "seed": seed, "step": 1000, "results": {
      "perplexity": {"overall": {"perplexity": 7.0}, "tasks": {"asr": {"perplexity": 1.6}, "tts": {"perplexity": 22}}},
      "asr": {"wer": wer, "cer": wer / 2, "chance_wer": 0.97, "utterances": 2, "samples": [
          {"reference": "TAKE THE BLUE BALL", "hypothesis": "TAKE THE BLUE BALL" if wer < 0.75 else "TAKE A BALL"},
          {"reference": "PUT TWO RED HATS ON THE RED BALL", "hypothesis": "PUT TWO RED CARS ON THE RED BALL"}]},
      "tts": {"semantic_roundtrip_wer": 0.9, "wer": None}}}


def test_table_gives_each_starts_mean_over_seeds():
  report = {"results": {"from_text": _result("from_text", 0, 0.7), "scratch": _result("scratch", 0, 0.6),
                        "from_text_seed1": _result("from_text", 1, 0.8), "scratch_seed1": _result("scratch", 1, 0.7)}}
  lines = bench.table(report).splitlines()
  mean_text = next(line for line in lines if "text checkpoint, mean" in line).split(" | ")
  mean_scratch = next(line for line in lines if "scratch, mean" in line).split(" | ")
  assert mean_text[1:3] == ["2 seeds", "1000"] and mean_text[6:8] == ["0.750", "0.375"]
  assert mean_scratch[6] == "0.650" and mean_text[-1] == "– |"   # no resynthesis: no mean either
  assert mean_text[9] == "0.250" and mean_scratch[9] == "0.500"  # held-out pairs read: (1/2 + 0/2) / 2, 1/2
  one_seed = bench.table({"results": {"from_text": _result("from_text", 0, 0.7)}})
  assert "mean" not in one_seed and len(one_seed.splitlines()) == 3


def test_held_out_pairs_read_counts_the_pairs_the_training_speech_never_says():
  assert ("blue", "ball") in bench.corpus.held_out_pairs(bench.CORPUS_SEED)  # as the corpus README lists
  assert ("red", "ball") not in bench.corpus.held_out_pairs(bench.CORPUS_SEED)
  samples = [{"reference": "TAKE THE BLUE BALLS AND A RED BALL", "hypothesis": "TAKE THE BLUE BALLS AND A RED CUP"},
             {"reference": "GRAB A RED HAT", "hypothesis": "GRAB A HAT RED"},
             {"reference": "PUSH A RED RING", "hypothesis": "push a red ring."},  # normalised, as WER is
             {"reference": "GO UP TWO STEPS", "hypothesis": "GO UP TWO STEPS"}]
  assert bench.held_out_pairs_read({"utterances": 4, "samples": samples}) == 2 / 3  # BLUE BALLS, RED RING; not RED HAT
  assert bench.held_out_pairs_read({"utterances": 5, "samples": samples}) is None  # not every transcript kept
  assert bench.held_out_pairs_read({"utterances": 1, "samples": samples[3:]}) is None  # no such pair said


@pytest.mark.parametrize("seeds", ["a", "0,-1"])
def test_bad_seeds_are_refused(seeds, capsys):
  with pytest.raises(SystemExit):
    bench.main([f"--seeds={seeds}"])
  assert "--seeds" in capsys.readouterr().err
