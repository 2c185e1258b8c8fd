"""The tokenization job in-process: outputs, resume, exactly-once accounting with broken inputs."""

import collections
import json
import pathlib
import threading

import numpy as np
import pytest
import soundfile as sf
import tensorflow_datasets as tfds

from audiopalm.audio.io import load_audio, write_audio
from audiopalm.semantic.unit_aligner import UnitAligner
from audiopalm.tokenizers import load_tokenizer
from audiopalm.tokens import shards
from data_pipeline import audio_source, batching, job, plan, records
from data_pipeline.audio_prep import AudioPrepConfig
from data_pipeline.readers.emilia_test import make_batch

ASSETS = pathlib.Path(__file__).resolve().parents[1] / "audiopalm" / "data" / "assets"
SEMANTIC = ("semantic", str(ASSETS / "demo_semantic"))
ACOUSTIC = ("codec", str(ASSETS / "demo_codec"))
BUCKETS = batching.BucketConfig(bucket_seconds=(2.0, 4.0, 8.0), batch_seconds=16.0)
PREP = AudioPrepConfig(max_segment_seconds=8.0, min_segment_seconds=1.0, require_transcript=True)


def _run(root, out, per_shard=16):
  return job.tokenize_corpus(reader="librispeech", reader_options={"roots": (str(root),)}, output_dir=str(out),
                             semantic=SEMANTIC, acoustic=ACOUSTIC, prep=PREP, buckets=BUCKETS,
                             job=job.JobConfig(utterances_per_shard=per_shard, decode_threads=2, prefetch=4))


def _examples(out):
  found = {}
  for shard in shards.find_shards(str(out)):
    for ex in shards.read_shard(shard.path):
      assert ex["id"] not in found, f"{ex['id']} written twice"
      found[ex["id"]] = ex
  return found


def _rejects(out):
  return [json.loads(line) for line in (pathlib.Path(out) / job.REJECTS).read_text().splitlines()]


def test_bundled_test_split_end_to_end(tmp_path):
  root = ASSETS / "demo_speech" / "test"
  summary = _run(root, tmp_path / "out")
  assert summary["shards"] == 3 and summary["examples"] == 40 and summary["rejects"] == 0
  examples = _examples(tmp_path / "out")
  assert len(examples) == 40 and _rejects(tmp_path / "out") == []
  # Tokens equal what each tokenizer gives on the utterance alone; the transcript goes along.
  ex = examples["101-10102-0000"]
  wave = load_audio(root / "101" / "10102" / "101-10102-0000.flac", 16000)
  for name, (kind, path) in (("semantic", SEMANTIC), ("acoustic", ACOUSTIC)):
    tokens, n = load_tokenizer(kind, path).encode(wave[None], np.array([len(wave)]))
    expected = np.asarray(tokens[0, :n[0]])
    np.testing.assert_array_equal(ex[name], expected[:, 0] if name == "semantic" else expected)
  assert ex["transcript"] == (root / "101" / "10102" / "101-10102.trans.txt").read_text().split("\n")[0].split(" ", 1)[1]
  assert ex["alignments"] is None  # the bundled MFCC units say no characters
  # The directory is a TFDS dataset, and a rerun does nothing.
  ds = tfds.builder_from_directory(str(tmp_path / "out")).as_dataset(split="train")
  assert sum(1 for _ in ds) == 40
  again = _run(root, tmp_path / "out")
  assert again["shards_this_run"] == 0 and again["examples"] == 40


def _broken_corpus(root: pathlib.Path) -> dict[str, str]:
  """A LibriSpeech-layout corpus with good and broken utterances; returns id → expected reject code ('' = kept)."""
  rng = np.random.default_rng(0)
  chapter = root / "7" / "70"
  chapter.mkdir(parents=True)
  t = np.arange(32000) / 16000
  speech = (0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32)
  expected, lines = {}, []

  def add(name, code, text="HELLO WORLD", writer=None):
    uid = f"7-70-{name}"
    if writer is not None:
      writer(chapter / f"{uid}.flac")
    if text is not None:
      lines.append(f"{uid} {text}")
    expected[uid] = code

  add("0000", "", writer=lambda p: write_audio(p, speech, 16000))
  add("0001", "", writer=lambda p: write_audio(p, speech[:20000], 16000))
  add("0002", "unreadable", writer=lambda p: p.write_bytes(rng.bytes(3000)))
  add("0010", "unreadable")  # in the transcripts, no audio file
  add("0003", "empty", writer=lambda p: sf.write(p, np.zeros((0,), np.float32), 16000, format="WAV"))  # header only
  add("0004", "too_short", writer=lambda p: write_audio(p, speech[:800], 16000))
  add("0005", "silent", writer=lambda p: write_audio(p, np.zeros(16000, np.float32), 16000))
  add("0006", "", writer=lambda p: sf.write(p, np.stack([speech] * 6, 1), 16000))  # 5.1: downmixed
  add("0007", "missing_transcript", text=None, writer=lambda p: write_audio(p, speech, 16000))
  full = speech.copy()
  full[100] = np.nan
  # (the content decides the format, not the name: a float WAV can hold NaN, FLAC cannot)
  add("0008", "non_finite", writer=lambda p: sf.write(p, full, 16000, format="WAV", subtype="FLOAT"))
  add("0009", "bad_transcript", text="HELLO\x07WORLD", writer=lambda p: write_audio(p, speech, 16000))
  (chapter / "7-70.trans.txt").write_text("\n".join(lines) + "\n")
  return expected


def test_tokenized_segment_keeps_the_transcript_only_for_whole_utterances():
  utt = records.Utterance(id="u1", audio=records.AudioRef("a.tar", "x/u1.flac"), transcript="hi", language="English",
                          speaker="s1")
  wave = np.zeros(16000, np.float32)
  whole = job.tokenized_segment(records.Segment(utt, 0, 0.0, wave, 16000), np.zeros((25, 1), np.int32),
                                np.zeros((50, 8), np.int32))
  assert (whole.id, whole.transcript, whole.source, whole.duration) == ("u1", "hi", "a.tar#x/u1.flac", 1.0)
  assert whole.semantic.shape == (25,)
  piece = job.tokenized_segment(records.Segment(utt, 2, 30.0, wave, 16000, single=False),
                                np.zeros(25, np.int32), np.zeros((50, 8), np.int32))
  assert (piece.id, piece.segment_index, piece.start, piece.transcript) == ("u1_0002", 2, 30.0, None)


def test_word_alignments_come_from_the_semantic_units_when_they_can():
  # A unit aligner whose unit u says output u sharply (outputs: blank, ' ', 'H', 'I'), at 10 units per second.
  probs = np.full((4, 4), 0.01) + np.eye(4)
  aligner = UnitAligner(np.log(probs / probs.sum(-1, keepdims=True)), " HI", 10.0)
  utt = records.Utterance(id="u1", audio=records.AudioRef("u1.flac"), transcript="HI IH", language="English")
  wave = np.zeros(16000, np.float32)
  units = np.array([0, 2, 3, 0, 1, 3, 3, 0, 2, 0], np.int32)  # H I _ ' ' I I _ H _
  whole = job.tokenized_segment(records.Segment(utt, 0, 0.0, wave, 16000), units, np.zeros((50, 8), np.int32), aligner)
  np.testing.assert_allclose(whole.alignments, [[0.1, 0.3], [0.5, 0.9]], atol=1e-6)
  piece = job.tokenized_segment(records.Segment(utt, 1, 1.0, wave, 16000, single=False), units,
                                np.zeros((50, 8), np.int32), aligner)
  assert piece.transcript is None and piece.alignments is None
  # The bundled MFCC units cannot be read as characters: 'auto' writes none, 'on' refuses to start.
  mfcc = load_tokenizer(*SEMANTIC)
  assert job.word_aligner(mfcc, "auto") is None and job.word_aligner(mfcc, "off") is None
  with pytest.raises(ValueError, match="word_alignments='on': .*not a CTC-trained one"):
    job.word_aligner(mfcc, "on")
  with pytest.raises(ValueError, match="word_alignments"):
    job.JobConfig(word_alignments="yes")


def test_broken_inputs_are_rejected_and_nothing_is_lost(tmp_path):
  expected = _broken_corpus(tmp_path / "corpus")
  summary = _run(tmp_path / "corpus", tmp_path / "out", per_shard=4)
  examples, rejects = _examples(tmp_path / "out"), _rejects(tmp_path / "out")
  kept = {uid for uid, code in expected.items() if not code}
  assert set(examples) == kept
  got = {r["id"]: r["reason"].split(":", 1)[0] for r in rejects}
  assert len(got) == len(rejects)  # each reject once
  for uid, code in expected.items():
    if code:
      assert got.get(uid) == code, (uid, got.get(uid), [r for r in rejects if r["id"] == uid])
  assert summary["examples"] == len(kept) and summary["rejects"] == len(rejects)
  stats = json.loads((tmp_path / "out" / "stats.json").read_text())
  assert stats["rejects"]["total"] == len(rejects)


def test_a_manifest_for_another_input_is_refused(tmp_path):
  _run(ASSETS / "demo_speech" / "test" / "101", tmp_path / "out")
  with pytest.raises(ValueError, match="was written for another input"):
    _run(ASSETS / "demo_speech" / "test" / "102", tmp_path / "out")


def test_duplicate_ids_keep_the_first():
  from data_pipeline.records import AudioRef, Reject, Utterance  # pylint: disable=import-outside-toplevel
  items = [Utterance("a", AudioRef("1.flac")), Reject("b", "2.flac", "bad_metadata: x"),
           Utterance("a", AudioRef("3.flac")), Utterance("c", AudioRef("4.flac"))]
  out = list(plan.dedupe(items))
  assert out[0] is items[0] and out[1] is items[1] and out[3] is items[3]
  assert out[2] == Reject("a", "3.flac", "duplicate_id: an earlier utterance has this id")


def test_emilia_archive_is_read_in_one_pass_and_every_item_accounted_for(tmp_path, monkeypatch):
  """The readers' Emilia fixture (MP3 members of a tar.gz, unsafe members, bad metadata lines)."""
  batch = make_batch(tmp_path)
  real_read_member = audio_source.read_member

  def no_random_access(path, member):
    if path.endswith(".tar.gz"):
      raise AssertionError(f"random access into {path} for {member}: the job should stream the archive")
    return real_read_member(path, member)

  monkeypatch.setattr(audio_source, "read_member", no_random_access)
  prep = AudioPrepConfig(max_segment_seconds=8.0, min_segment_seconds=1.0, min_utterance_seconds=0.2)
  summary = job.tokenize_corpus(reader="emilia", reader_options={"roots": (str(batch / "EN"),)},
                                output_dir=str(tmp_path / "out"), semantic=SEMANTIC, acoustic=ACOUSTIC, prep=prep,
                                buckets=BUCKETS, job=job.JobConfig(utterances_per_shard=5, decode_threads=2))
  manifest = [json.loads(line) for line in (tmp_path / "out" / plan.MANIFEST).read_text().splitlines()[1:]]
  inputs = sorted(x["utterance"]["id"] if "utterance" in x else x["reject"]["id"] for x in manifest)
  examples, rejects = _examples(tmp_path / "out"), _rejects(tmp_path / "out")
  assert sorted(list(examples) + [r["id"] for r in rejects]) == inputs  # each input exactly once
  # The records with audio, metadata and a clean transcript; the reader rejects the rest.
  assert set(examples) == {"EN_B00000_S00000_W000000", "EN_B00000_S00000_W000001", "EN_B00000_S00001_W000003"}
  assert examples["EN_B00000_S00000_W000001"]["language"] == "Chinese"
  codes = {r["reason"].split(":")[0] for r in rejects}
  assert {"unsafe_path", "bad_metadata", "bad_transcript"} <= codes, codes
  assert summary["examples"] == len(examples)


def test_long_recordings_are_read_once_and_decoded_on_the_pool(tmp_path, monkeypatch):
  """LibriLight-like recordings longer than anything decoded at once: each file is read by one request, and every
  decode (header, scan windows, pieces) happens on the pool, none on the main thread."""
  from audiopalm.files import storage  # pylint: disable=import-outside-toplevel
  from tools.benchmark_storage import make_librilight_corpus  # pylint: disable=import-outside-toplevel

  flacs = make_librilight_corpus(tmp_path / "corpus", recordings=2, minutes=2.5)
  reads = collections.Counter()
  real_read_bytes, real_read_native = storage.read_bytes, audio_source.read_native

  def counted(path):
    reads[str(path)] += 1
    return real_read_bytes(path)

  def off_the_main_thread(*args, **kwargs):
    assert threading.current_thread() is not threading.main_thread(), "decoded on the main thread"
    return real_read_native(*args, **kwargs)

  monkeypatch.setattr(storage, "read_bytes", counted)
  monkeypatch.setattr(audio_source, "read_native", off_the_main_thread)
  prep = AudioPrepConfig(max_segment_seconds=8.0, min_segment_seconds=1.0, window_seconds=20.0)
  summary = job.tokenize_corpus(reader="librilight", reader_options={"roots": (str(tmp_path / "corpus"),)},
                                output_dir=str(tmp_path / "out"), semantic=SEMANTIC, acoustic=ACOUSTIC, prep=prep,
                                buckets=BUCKETS, job=job.JobConfig(utterances_per_shard=1, decode_threads=2))
  assert [reads[str(p)] for p in flacs] == [1, 1]  # (and the JSON beside each, once, by the reader)
  assert summary["examples"] > 2 * 150 / 8 and summary["rejects"] == 0  # cut into pieces of at most 8 s
  assert sorted(summary["shards_written"]) == [0, 1]


def test_emilia_trusting_the_jsonl_reads_each_archive_once(tmp_path, monkeypatch):
  """With scan=False (gin_configs/tokenize/emilia.gin) planning reads only the .jsonl, and the job streams the
  archive once: members that are missing or unsafe are rejected from that one pass, with their reasons."""
  batch = make_batch(tmp_path)
  passes = []
  real_scan = audio_source.scan_archive

  def counted(path, read=None):
    passes.append(path)
    return real_scan(path, read)

  monkeypatch.setattr(audio_source, "scan_archive", counted)
  prep = AudioPrepConfig(max_segment_seconds=8.0, min_segment_seconds=1.0, min_utterance_seconds=0.2)
  summary = job.tokenize_corpus(reader="emilia", reader_options={"roots": (str(batch / "EN"),), "scan": False},
                                output_dir=str(tmp_path / "out"), semantic=SEMANTIC, acoustic=ACOUSTIC, prep=prep,
                                buckets=BUCKETS, job=job.JobConfig(utterances_per_shard=20, decode_threads=2))
  assert len(passes) == 1  # the job's one pass; none at planning, none for the bad members
  manifest = [json.loads(line) for line in (tmp_path / "out" / plan.MANIFEST).read_text().splitlines()[1:]]
  inputs = sorted(x["utterance"]["id"] if "utterance" in x else x["reject"]["id"] for x in manifest)
  examples, rejects = _examples(tmp_path / "out"), _rejects(tmp_path / "out")
  assert sorted(list(examples) + [r["id"] for r in rejects]) == inputs and len(inputs) == 12
  reasons = {r["id"]: r["reason"] for r in rejects}
  assert reasons["link"].startswith("unsafe_path: ") and "symbolic link" in reasons["link"]
  assert reasons["missing"].startswith("unreadable: no member 'EN_B00000/none.mp3'")
  assert set(examples) == {"EN_B00000_S00000_W000000", "EN_B00000_S00000_W000001", "EN_B00000_S00001_W000003"}
  assert summary["examples"] == 3


def test_windows_of_one_archive_member_each_get_its_bytes(tmp_path):
  """Several utterances naming one member (windows of one file, a JSONL manifest) all come from the one pass."""
  import io  # pylint: disable=import-outside-toplevel
  import tarfile  # pylint: disable=import-outside-toplevel

  t = np.arange(6 * 16000) / 16000
  speech = (0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32)
  buffer = io.BytesIO()
  sf.write(buffer, speech, 16000, format="FLAC")
  with tarfile.open(tmp_path / "batch.tar.gz", "w:gz") as tar:
    info = tarfile.TarInfo("x/a.flac")
    info.size = len(buffer.getvalue())
    tar.addfile(info, io.BytesIO(buffer.getvalue()))
  lines = [{"id": f"w{i}", "path": "batch.tar.gz", "member": "x/a.flac", "start": 2.0 * i, "end": 2.0 * i + 2,
            "text": "hello"} for i in range(3)]
  (tmp_path / "m.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
  summary = job.tokenize_corpus(reader="jsonl_manifest", reader_options={"manifests": (str(tmp_path / "m.jsonl"),)},
                                output_dir=str(tmp_path / "out"), semantic=SEMANTIC, acoustic=ACOUSTIC, prep=PREP,
                                buckets=BUCKETS, job=job.JobConfig(utterances_per_shard=10, decode_threads=2))
  assert summary["rejects"] == 0 and sorted(_examples(tmp_path / "out")) == ["w0", "w1", "w2"]
