"""Tests of the token inspector on a small dataset made with the bundled tokenizers from bundled speech."""

import io
import os
import pathlib
import shutil

import numpy as np
import pytest
import soundfile as sf

from audiopalm.audio.io import load_audio
from audiopalm.tokenizers import load_tokenizer
from audiopalm.tokens import dataset_info, schema, shards
from data_pipeline import job, records
from tools import inspect_tokens

ASSETS = pathlib.Path(__file__).resolve().parents[1] / "audiopalm" / "data" / "assets"
CODEC = str(ASSETS / "demo_codec")
SEMANTIC = str(ASSETS / "demo_semantic")
UTTERANCES = ["102/10202/102-10202-0000", "102/10202/102-10202-0002"]  # 1.60 s and 1.57 s


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
  """Two shards of one utterance each (the second without a transcript); tokens from the bundled tokenizers."""
  semantic_tok, codec_tok = load_tokenizer("semantic", SEMANTIC), load_tokenizer("codec", CODEC)
  info = schema.TokensInfo(semantic=schema.TokenizerSpec.from_tokenizer(semantic_tok, SEMANTIC),
                           acoustic=schema.TokenizerSpec.from_tokenizer(codec_tok, CODEC))
  paths = [ASSETS / "demo_speech" / "test" / f"{u}.flac" for u in UTTERANCES]
  waves = [load_audio(p, 16000) for p in paths]
  lengths = np.array([len(w) for w in waves], np.int32)
  batch = np.stack([np.pad(w, (0, lengths.max() - len(w))) for w in waves])  # [2, S]
  semantic, semantic_lengths = semantic_tok.encode(batch, lengths)  # [2, T_s, 1]
  acoustic, acoustic_lengths = codec_tok.encode(batch, lengths)  # [2, T_a, 8]
  out = str(tmp_path_factory.mktemp("tokens"))
  stats, segs = [], []
  for i, (path, wave) in enumerate(zip(paths, waves)):
    utt = records.Utterance(id=path.stem, audio=records.AudioRef(str(path)),
                            transcript="MOVE THE PINK BOX LEFT" if i == 0 else None, language="English",
                            speaker="102")
    seg = job.tokenized_segment(records.Segment(utt, 0, 0.0, wave, 16000), semantic[i, :int(semantic_lengths[i])],
                                acoustic[i, :int(acoustic_lengths[i])])
    with shards.ShardWriter(out, i, 2, info, dataset_name="demo") as writer:
      writer.write(seg)
    stats.append(writer.stats)
    segs.append(seg)
  bare = str(tmp_path_factory.mktemp("bare"))  # the shards alone, as while the job runs
  for s in stats:
    shutil.copy(os.path.join(out, s.filename), bare)
  dataset_info.write_dataset_info(out, tokens=info, shards=stats, rejects={"too_short": 1}, dataset_name="demo")
  assert dataset_info.read_metadata(out).tokens == info
  return out, info, stats, segs, bare


def test_report_without_metadata(dataset, capsys):
  bare = dataset[-1]
  assert inspect_tokens.main(["--dir", bare]) == 0
  text = capsys.readouterr().out
  assert "metadata.json does not exist" in text and "| demo-train.tfrecord-00001-of-00002 | 1 |" in text
  assert "| total | 2 |" in text and "acoustic level 7:" in text


def test_report(dataset):
  out, info, _, segs, _ = dataset
  buffer = io.StringIO()
  assert inspect_tokens.inspect(directory=out, file=buffer) == 0
  text = buffer.getvalue()
  assert info.acoustic.identity in text and info.semantic.identity in text
  assert "8 x 256 codes at 50 Hz" in text and "1 x 256 codes at 25 Hz" in text
  assert "rejects: 1 (too_short 1)" in text and "MISMATCH" not in text
  frames = sum(len(s.acoustic) for s in segs)
  assert f"| total | 2 | {sum(s.duration for s in segs) / 3600:.4f} |" in text and f"| {frames} |" in text
  assert "acoustic level 7:" in text and "semantic codes:" in text

  buffer = io.StringIO()
  assert inspect_tokens.inspect(directory=out, shard=1, file=buffer) == 0
  assert "demo-train.tfrecord-00000-of-00002" not in buffer.getvalue()
  assert inspect_tokens.main(["--dir", out, "--shard", "5"]) == 2


def test_usage_counts_distinct_codes_and_perplexity():
  assert inspect_tokens.usage(np.array([0, 5, 5, 0])) == (2, pytest.approx(2.0))
  assert inspect_tokens.usage(np.zeros(4)) == (0, 0.0)


def test_decode_writes_a_wav_of_the_segment_length(dataset, tmp_path, capsys):
  out, _, _, segs, _ = dataset
  seg = segs[1]
  wav = str(tmp_path / "x.wav")
  assert inspect_tokens.main(["--dir", out, "--decode_id", seg.id, "--codec", CODEC, "--out", wav]) == 0
  assert f"wrote {wav}" in capsys.readouterr().out
  audio, rate = sf.read(wav)
  assert rate == 16000 and len(audio) == round(seg.duration * 16000) and np.abs(audio).max() > 0.01

  assert inspect_tokens.main(["--dir", out, "--decode_id", "nope", "--out", wav]) == 1
  assert "no example 'nope'" in capsys.readouterr().err


def test_decode_refuses_another_codec(dataset, tmp_path, capsys):
  out, info, _, segs, _ = dataset
  meta = dataset_info.read_metadata(out)
  fake = schema.TokenizerSpec(**{**info.acoustic.to_json(), "identity": "codec-other"})
  bad = str(tmp_path / "bad")
  with shards.ShardWriter(bad, 0, 1, schema.TokensInfo(semantic=info.semantic, acoustic=fake)) as writer:
    writer.write(segs[0])
  assert meta.tokens.acoustic.path == CODEC
  wav = str(tmp_path / "y.wav")
  assert inspect_tokens.main(["--dir", bad, "--decode_id", segs[0].id, "--codec", CODEC, "--out", wav]) == 1
  assert "--allow_codec_mismatch" in capsys.readouterr().err
  assert inspect_tokens.main(["--dir", bad, "--decode_id", segs[0].id, "--codec", CODEC, "--out", wav,
                              "--allow_codec_mismatch"]) == 0
  assert sf.info(wav).frames == round(segs[0].duration * 16000)
