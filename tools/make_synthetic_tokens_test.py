"""The synthetic-token tool writes the dataset its flags describe."""

from audiopalm.tokens import dataset_info, synthetic
from tools import make_synthetic_tokens


def test_flags_are_the_config_fields(tmp_path, capsys):
  out = str(tmp_path / "synth")
  make_synthetic_tokens.main([f"--output={out}", "--examples=6", "--num_shards=2", "--min_seconds=1",
                              "--max_seconds=2", "--semantic_vocab=64", "--num_codebooks=2", "--seed=3"])
  meta = dataset_info.read_metadata(out)
  cfg = synthetic.SyntheticConfig(examples=6, num_shards=2, min_seconds=1.0, max_seconds=2.0, semantic_vocab=64,
                                  num_codebooks=2, seed=3)
  assert meta.tokens == synthetic.tokens_info(cfg)
  assert meta.totals.examples == 6 and meta.totals.num_shards == 2
  assert f"wrote 6 examples ({meta.totals.hours:.2f} h) in 2 shards to {out}" in capsys.readouterr().out
