"""tools.benchmark_units on the bundled train split (26 of its sentences are spoken by two voices)."""

import pathlib

from data_pipeline.records import AudioRef, Utterance
from tools import benchmark_units

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_edit_distance_and_deduplication():
  assert benchmark_units.edit_distance([1, 2, 3], [1, 2, 3]) == 0.0
  assert benchmark_units.edit_distance([1, 2, 3], [1, 3]) == 1 / 3
  assert benchmark_units.edit_distance([1, 2], [3, 4, 5, 6]) == 1.0
  assert benchmark_units.deduplicated([5, 5, 2, 2, 2, 5]) == [5, 2, 5]


def test_triples_pair_a_sentence_across_voices_and_a_voice_across_sentences():
  def u(i, text, voice):
    return Utterance(id=str(i), audio=AudioRef(f"{i}.flac"), transcript=text, speaker=voice)
  corpus = [u(0, "A", "v1"), u(1, "A", "v2"), u(2, "B", "v1"), u(3, "C", "v3"), u(4, "B", "v1")]
  chosen = benchmark_units.triples(corpus, pairs=10, seed=0)
  assert len(chosen) == 1  # only "A" is spoken by two voices
  a, b, c = chosen[0]
  assert a.transcript == b.transcript and a.speaker != b.speaker
  assert c.speaker == a.speaker and c.transcript != a.transcript


def test_the_table_has_a_row_per_tokenizer(capsys):
  tokenizer = str(ROOT / "audiopalm/data/assets/demo_semantic")
  code = benchmark_units.main([f"--tokenizer={tokenizer}", f"--tokenizer={tokenizer}",
                               f"--speech={ROOT / 'audiopalm/data/assets/demo_speech/train'}", "--pairs=6"])
  assert code == 0
  rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith(f"| {tokenizer}")]
  assert len(rows) == 2 and rows[0] == rows[1]  # the same recordings for every tokenizer
  cells = rows[0].strip("|").split("|")
  assert cells[1].strip() == "256" and cells[2].strip() == "25"
  same, other, gap = (float(c) for c in cells[3:6])
  assert 0 < same <= 1 and 0 < other <= 1 and abs(gap - (other - same)) < 2e-3


def test_a_corpus_without_shared_sentences_is_reported(capsys, tmp_path):
  speaker = ROOT / "audiopalm/data/assets/demo_speech/train/101"
  code = benchmark_units.main([f"--tokenizer={ROOT / 'audiopalm/data/assets/demo_semantic'}", f"--speech={speaker}"])
  assert code == 1 and "spoken by two voices" in capsys.readouterr().err
