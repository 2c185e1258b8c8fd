"""tools.benchmark_coarse_table: the contexts it counts, and its table on the demo tokens."""

import json

from tools import benchmark_coarse_table

DEMO_TEXT = "audiopalm/data/assets/demo_text.txt"


def test_frame_contexts_follow_the_aligned_blocks():
  # 25 Hz semantic, 50 Hz acoustic: each semantic token covers two frames; edges repeat.
  semantic = [7, 8, 9]
  assert benchmark_coarse_table.frame_contexts(semantic, 6, 1, 2, (0,), False) == [(7,), (7,), (8,), (8,), (9,), (9,)]
  assert benchmark_coarse_table.frame_contexts(semantic, 4, 1, 2, (-1, 0), True) == [
      (0, 7, 7), (1, 7, 7), (0, 7, 8), (1, 7, 8)]
  assert benchmark_coarse_table.frame_contexts(semantic, 2, 1, 2, (0, 1), True)[-1] == (1, 7, 8)
  # 50 Hz semantic, 75 Hz acoustic: blocks of 2 : 3 frames (formats.audiolm_stages.frame_semantic's mapping).
  assert benchmark_coarse_table.frame_contexts([1, 2, 3, 4], 6, 2, 3, (0,), True) == [
      (0, 1), (1, 1), (2, 2), (0, 3), (1, 3), (2, 4)]


def test_the_table_on_the_demo_tokens(demo_tokens, tmp_path, capsys):
  out = tmp_path / "rows.json"
  assert benchmark_coarse_table.main([f"--train_tokens={demo_tokens}", f"--test_tokens={demo_tokens}",
                                      "--test_split=train", "--max_train=60", "--max_test=4",
                                      f"--recognizer_text={DEMO_TEXT}", f"--output={out}"]) == 0
  rows = json.loads(out.read_text())["rows"]
  assert [r["context"] for r in rows] == ["codec, real level 0"] + [c[0] for c in benchmark_coarse_table.CONTEXTS]
  assert rows[0]["accuracy"] == 1.0 and all(0 <= r["recognizer_wer"] for r in rows)
  # Counted on the same utterances it predicts, the wider contexts memorise more of them.
  assert rows[1]["accuracy"] <= rows[2]["accuracy"] <= rows[4]["accuracy"]
  assert "| sem[i-1..i], phase |" in capsys.readouterr().out
  assert benchmark_coarse_table.main([f"--train_tokens={tmp_path}/none", f"--test_tokens={demo_tokens}"]) == 2
