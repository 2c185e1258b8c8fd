"""Reading audio from files, tar members (in place, plain and gzipped, MP3 included) and readers' loaders."""

import gzip
import io
import pathlib
import tarfile

import numpy as np
import pytest
import soundfile as sf

from audiopalm.audio.io import AudioDecodeError, load_audio, write_audio
from data_pipeline import audio_source
from data_pipeline.audio_source import decode_audio_bytes, iter_archive, read_audio, read_member
from data_pipeline.records import AudioRef


def tone(seconds: float, rate: int, freq: float = 440.0) -> np.ndarray:
  t = np.arange(int(seconds * rate)) / rate
  return (0.4 * np.sin(2 * np.pi * freq * t) * np.linspace(0.2, 1.0, len(t))).astype(np.float32)


def encoded(wave: np.ndarray, rate: int, fmt: str) -> bytes:
  buf = io.BytesIO()
  sf.write(buf, wave, rate, format=fmt, **({"subtype": "PCM_16"} if fmt != "MP3" else {}))
  return buf.getvalue()


def add(tar: tarfile.TarFile, name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE, link: str = "") -> None:
  info = tarfile.TarInfo(name)
  info.type, info.linkname, info.size = kind, link, len(data) if kind == tarfile.REGTYPE else 0
  tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


@pytest.fixture(scope="module")
def sources():
  return {"flac": (tone(1.0, 16000), 16000), "mp3": (tone(2.0, 24000, 330.0), 24000)}


def make_archive(path, sources) -> str:
  with tarfile.open(path, "w:gz" if str(path).endswith(".gz") else "w") as tar:
    add(tar, "./batch/a.flac", encoded(*sources["flac"], "FLAC"))
    add(tar, "batch/link.mp3", kind=tarfile.SYMTYPE, link="/etc/passwd")
    add(tar, "../evil.mp3", b"not audio")
    add(tar, "batch/b.mp3", encoded(*sources["mp3"], "MP3"))
    add(tar, "batch/notes.txt", b"hello")
  return str(path)


def test_installed_libsndfile_decodes_mp3(sources):
  assert "MP3" in sf.available_formats()
  wave, rate = sources["mp3"]
  decoded = decode_audio_bytes(encoded(wave, rate, "MP3"), "x.mp3", None)
  assert len(decoded) == len(wave) and np.corrcoef(decoded, wave)[0, 1] > 0.99


@pytest.mark.parametrize("suffix", [".tar", ".tar.gz"])
def test_members_are_read_in_place_with_windows(tmp_path, sources, suffix):
  archive = make_archive(tmp_path / f"batch{suffix}", sources)
  flac, rate = sources["flac"]
  np.testing.assert_allclose(read_audio(AudioRef(archive, "batch/a.flac"), None), flac, atol=1e-4)
  window = read_audio(AudioRef(archive, "./batch/a.flac"), None, start=0.25, end=0.5)
  np.testing.assert_allclose(window, flac[4000:8000], atol=1e-4)
  assert len(read_audio(AudioRef(archive, "batch/a.flac"), 8000, start=0.5)) == 4000
  # MP3 windows are cut from a decode from the start: they match the whole decode exactly.
  whole = read_audio(AudioRef(archive, "batch/b.mp3"), None)
  part = read_audio(AudioRef(archive, "batch/b.mp3"), None, start=1.0, end=1.5)
  np.testing.assert_array_equal(part, whole[24000:36000])


@pytest.mark.parametrize("suffix", [".tar", ".tar.gz"])
def test_unsafe_missing_and_undecodable_members_raise(tmp_path, sources, suffix):
  archive = make_archive(tmp_path / f"batch{suffix}", sources)
  for member, match in [("batch/link.mp3", "unsafe_path: .*symbolic link"), ("../evil.mp3", "unsafe_path: .*'\\.\\.'"),
                        ("/etc/passwd", "unsafe_path: absolute"), ("batch/none.mp3", "no member"),
                        ("batch/notes.txt", "batch/notes.txt.*(Error|error)")]:
    with pytest.raises(AudioDecodeError, match=match):
      read_audio(AudioRef(archive, member), None)
  with pytest.raises(AudioDecodeError, match="no such archive"):
    read_member(str(tmp_path / f"none{suffix}"), "a.flac")


def test_iter_archive_reads_each_safe_member_once_in_order(tmp_path, sources):
  archive = make_archive(tmp_path / "batch.tar.gz", sources)
  names = [name for name, _ in iter_archive(archive)]
  assert names == ["batch/a.flac", "batch/b.mp3", "batch/notes.txt"]
  audio = dict(iter_archive(archive, select=lambda name: name.endswith((".flac", ".mp3"))))
  assert sorted(audio) == ["batch/a.flac", "batch/b.mp3"]
  np.testing.assert_allclose(decode_audio_bytes(audio["batch/a.flac"], "a", None), sources["flac"][0], atol=1e-4)


def test_a_truncated_archive_gives_its_first_members_then_an_error(tmp_path, sources):
  good = make_archive(tmp_path / "batch.tar", sources)
  data = open(good, "rb").read()
  cut = tmp_path / "cut.tar.gz"
  compressed = gzip.compress(data)
  cut.write_bytes(compressed[:len(compressed) * 3 // 4])
  names = []
  with pytest.raises(AudioDecodeError, match="corrupt archive"):
    for name, _ in iter_archive(str(cut)):
      names.append(name)
  assert names[:1] == ["batch/a.flac"]
  plain = tmp_path / "cut.tar"
  with tarfile.open(good) as tar:
    mp3 = tar.getmember("batch/b.mp3")
  plain.write_bytes(data[:mp3.offset_data + mp3.size // 2])  # the MP3 member's data runs past the end
  audio_source.clear_index_cache()
  np.testing.assert_allclose(read_audio(AudioRef(str(plain), "batch/a.flac"), None), sources["flac"][0], atol=1e-4)
  with pytest.raises(AudioDecodeError, match="truncated|corrupt"):
    read_audio(AudioRef(str(plain), "batch/b.mp3"), None)


def test_files_delegate_to_load_audio_and_mp3_files_are_not_seeked(tmp_path, sources):
  path = str(tmp_path / "a.flac")
  write_audio(path, *sources["flac"])
  np.testing.assert_array_equal(read_audio(AudioRef(path), 8000, start=0.1, end=0.6),
                                load_audio(path, 8000, start=0.1, end=0.6))
  mp3 = tmp_path / "b.mp3"
  mp3.write_bytes(encoded(*sources["mp3"], "MP3"))
  whole = read_audio(AudioRef(str(mp3)), None)
  np.testing.assert_array_equal(read_audio(AudioRef(str(mp3)), None, start=1.0, end=1.25), whole[24000:30000])
  with pytest.raises(AudioDecodeError):
    read_audio(AudioRef(str(tmp_path / "missing.flac")), None)


def test_audio_held_by_a_reader_goes_through_its_loader():
  ref = AudioRef("tfds://ds/train/3")
  with pytest.raises(AudioDecodeError, match="loader"):
    read_audio(ref, 16000)
  stereo = np.stack([np.full(16000, 0.5), np.full(16000, -0.25)], axis=1).astype(np.float32)  # [samples, 2]
  out = read_audio(ref, 8000, start=0.5, loader=lambda r: (stereo, 16000))
  assert out.shape == (4000,) and np.allclose(out[100:-100], 0.125, atol=1e-3)


def test_member_names_and_safety():
  assert audio_source.member_key("././a/b.mp3") == "a/b.mp3"
  assert audio_source.unsafe_name("a/../../b") and audio_source.unsafe_name("/a") and audio_source.unsafe_name("")
  assert audio_source.unsafe_name("a/b..c.mp3") is None
  assert audio_source.archive_stem("x/EN_B00000.tar.gz") == "x/EN_B00000" and audio_source.is_archive("a.TGZ")


def test_native_reads_and_headers_for_any_ref(tmp_path, sources):
  archive = make_archive(tmp_path / "batch.tar", sources)
  flac, rate = sources["flac"]
  path = str(tmp_path / "a.flac")
  write_audio(path, flac, rate)
  for ref in (AudioRef(path), AudioRef(archive, "batch/a.flac")):
    wave, got_rate = audio_source.read_native(ref, 0.25, 0.5)
    assert got_rate == rate and np.allclose(wave, flac[4000:8000, None], atol=1e-4)  # [samples, channels]
    assert audio_source.ref_info(ref) == (rate, len(flac), 1)
  members = dict(iter_archive(archive))
  elsewhere = AudioRef(str(tmp_path / "gone.tar"), "batch/b.mp3")  # with the bytes at hand, no archive is read
  wave, got_rate = audio_source.read_native(elsewhere, 1.0, data=members["batch/b.mp3"])
  assert got_rate == 24000 and len(wave) == 24000
  assert audio_source.ref_info(elsewhere, data=members["batch/b.mp3"]) == (24000, 48000, 1)
  stereo = np.zeros((800, 2), np.float32)
  held = AudioRef("tfds://ds/train/0")
  assert audio_source.ref_info(held, loader=lambda r: (stereo, 8000)) == (8000, 800, 2)
  assert audio_source.read_native(held, 0.05, loader=lambda r: (stereo, 8000))[0].shape == (400, 2)


def test_audio_prep_reads_archive_members_through_these_hooks(tmp_path, sources):
  import functools

  from data_pipeline.audio_prep import AudioPrepConfig, prepare
  from data_pipeline.records import Reject, Utterance

  archive = make_archive(tmp_path / "batch.tar.gz", sources)
  members = dict(iter_archive(archive))
  config = AudioPrepConfig(sample_rates=(16000,))
  utt = Utterance("b", AudioRef(archive, "batch/b.mp3"))
  plan = prepare(utt, config, reader=functools.partial(audio_source.read_native, data=members["batch/b.mp3"]),
                 info=functools.partial(audio_source.ref_info, data=members["batch/b.mp3"]))
  assert not isinstance(plan, Reject)
  (piece,) = list(plan)
  assert piece[16000].waveform.shape == (32000,)
  unsafe = prepare(Utterance("l", AudioRef(archive, "batch/link.mp3")), config, reader=audio_source.read_native,
                   info=audio_source.ref_info)
  assert isinstance(unsafe, Reject) and unsafe.code == "unsafe_path"


@pytest.mark.parametrize("suffix", [".tar", ".tar.gz"])
def test_archives_on_gcs_stream_in_one_request_and_members_read_by_range(tmp_path, sources, suffix, gcs_bucket):
  from audiopalm.files import storage  # pylint: disable=import-outside-toplevel

  local = make_archive(tmp_path / f"batch{suffix}", sources)
  remote = f"{gcs_bucket}/EN/batch{suffix}"
  storage.write_bytes(remote, pathlib.Path(local).read_bytes())
  before = storage.counts()
  members = dict(iter_archive(remote))
  streamed = storage.counts() - before
  assert members == dict(iter_archive(local)) and set(members) == {"batch/a.flac", "batch/b.mp3", "batch/notes.txt"}
  assert (streamed.requests, streamed.bytes_read) == (1, storage.size(remote))  # one pass, one request
  if suffix == ".tar":  # random access: the index once (one pass), then one ranged read of exactly the member
    audio_source.read_member(remote, "batch/b.mp3")
    before = storage.counts()
    data = audio_source.read_member(remote, "batch/a.flac")
    ranged = storage.counts() - before
    assert data == members["batch/a.flac"] and (ranged.requests, ranged.bytes_read) == (1, len(data))
  with pytest.raises(AudioDecodeError, match="unsafe_path"):
    audio_source.read_member(remote, "../evil.mp3")
