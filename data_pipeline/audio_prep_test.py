"""Audio preparation: segments of good input, one Reject for each kind of bad input, bounded memory."""

import functools
import math
import os
import tracemalloc

import numpy as np
import pytest
import soundfile as sf

from audiopalm.audio.io import AudioDecodeError, load_audio, write_audio
from data_pipeline import audio_prep, audio_source
from data_pipeline.audio_prep import AudioPrepConfig, SegmentPlan, plan_segments, prepare
from data_pipeline.records import AudioRef, Reject, Utterance

RATE = 16000
DEMO = os.path.join(os.path.dirname(__file__), "..", "audiopalm", "data", "assets", "demo_speech")


def _bursts(bursts, seconds, rate=RATE, noise=1e-3, seed=0):
  """Noise bursts (start, end) at amplitude 0.3 over a -60 dB noise floor: float32 [samples]."""
  rng = np.random.default_rng(seed)
  x = (noise * rng.standard_normal(int(round(seconds * rate)))).astype(np.float32)
  for start, end in bursts:
    a, b = int(round(start * rate)), int(round(end * rate))
    x[a:b] += 0.3 * rng.uniform(-1, 1, b - a).astype(np.float32)
  return x


def _utt(path, **kwargs):
  return Utterance(kwargs.pop("id", "u1"), AudioRef(str(path)), **kwargs)


def _segments(plan):
  assert isinstance(plan, SegmentPlan), plan
  return list(plan)


class CountingReader:
  """The default reader, recording the length (samples) of every decode it is asked for."""

  def __init__(self):
    self.samples: list[int] = []

  def __call__(self, ref, start, end):
    wave, rate = audio_prep.read_file(ref, start, end)
    self.samples.append(len(wave))
    return wave, rate


# --- good input ---------------------------------------------------------------------------------------------


def test_short_stereo_file_is_one_segment_at_each_rate(tmp_path):
  t = np.arange(int(2.0 * 22050)) / 22050
  stereo = np.stack([0.4 * np.sin(2 * np.pi * 440 * t), 0.2 * np.sin(2 * np.pi * 1000 * t)], axis=1)
  path = tmp_path / "a.flac"
  write_audio(path, stereo, 22050)
  plan = prepare(_utt(path, transcript="hello"), AudioPrepConfig(sample_rates=(16000, 24000, 16000)))
  (piece,) = _segments(plan)
  assert sorted(piece) == [16000, 24000] and plan.single and plan.sample_rate == 22050
  for rate, seg in piece.items():
    assert seg.sample_rate == rate and seg.index == 0 and seg.start == 0.0 and seg.single and seg.id == "u1"
    assert seg.waveform.dtype == np.float32 and seg.waveform.ndim == 1
    assert abs(seg.duration - 2.0) < 2 / rate and np.abs(seg.waveform).max() <= 1.0
    np.testing.assert_allclose(seg.waveform, load_audio(path, rate), atol=1e-6)  # downmix, then soxr HQ once
  assert [len(s) for s in _segments(plan)] == [2]  # iterating again gives the same


def test_a_window_into_a_file(tmp_path):
  path = tmp_path / "a.flac"
  write_audio(path, _bursts([(0.0, 4.0)], 4.0), RATE)
  (piece,) = _segments(prepare(_utt(path, start=1.0, end=2.5), AudioPrepConfig()))
  seg = piece[RATE]
  assert seg.start == 1.0 and seg.single
  np.testing.assert_array_equal(seg.waveform, load_audio(path, None, start=1.0, end=2.5))
  (piece,) = _segments(prepare(_utt(path, start=3.0, end=99.0), AudioPrepConfig()))  # end clipped to the file
  assert piece[RATE].duration == 1.0


def _check_cut(pieces, regions, config, path, start=0.0):
  """Segments at most max_segment_seconds, never cutting inside a region, covering all regions."""
  segs = [p[RATE] for p in pieces]
  assert [s.index for s in segs] == list(range(len(segs))) and all(not s.single for s in segs)
  assert segs[0].id == "u1_0000" and len(segs) > 1
  windows = [(s.start, s.start + s.duration) for s in segs]
  assert all(e - s <= config.max_segment_seconds for s, e in windows)
  assert all(e1 <= s2 for (_, e1), (s2, _) in zip(windows, windows[1:]))
  for a, b in regions:
    assert any(s <= a + 1e-9 and b - 1e-9 <= e for s, e in windows), ((a, b), windows)  # inside one segment
  for seg, (s, e) in zip(segs, windows):
    np.testing.assert_array_equal(seg.waveform, load_audio(path, None, start=s, end=e))
  return windows


def test_voice_activity_is_packed_into_segments_cut_at_gaps(tmp_path):
  regions = [(1.0, 4.0), (4.5, 9.0), (9.3, 12.0), (13.0, 17.5), (25.0, 27.0), (27.5, 33.0), (33.4, 39.0),
             (40.0, 41.5), (60.0, 60.4)]  # a 20 s pause; the last one alone and too short
  path = tmp_path / "long.flac"
  write_audio(path, _bursts(regions, 70.0), RATE)
  config = AudioPrepConfig(max_segment_seconds=10.0, window_seconds=20.0)
  plan = prepare(_utt(path, voice_activity=tuple(regions)), config)
  windows = _check_cut(_segments(plan), regions[:-1], config, path)
  np.testing.assert_allclose(windows, [(0.8, 9.15), (9.15, 17.7), (24.8, 33.2), (33.2, 41.7)], atol=1e-9)
  assert plan.duration == pytest.approx(sum(e - s for s, e in windows))
  # An utterance window into the same file: regions clipped to it.
  plan = prepare(_utt(path, start=26.0, end=50.0, voice_activity=tuple(regions)), config)
  np.testing.assert_allclose([(p[RATE].start, p[RATE].start + p[RATE].duration) for p in plan],
                             [(26.0, 33.2), (33.2, 41.7)], atol=1e-9)


@pytest.mark.parametrize("with_voice_activity", [True, False])
def test_a_region_longer_than_a_segment_is_cut_at_its_quietest_points(tmp_path, with_voice_activity):
  x = _bursts([(1.0, 24.0)], 25.0)
  for dip in (7.0, 14.5, 21.0):  # 200 ms dips
    x[int((dip - 0.1) * RATE):int((dip + 0.1) * RATE)] *= 0.01
  path = tmp_path / "long.flac"
  write_audio(path, x, RATE)
  config = AudioPrepConfig(max_segment_seconds=10.0, window_seconds=10.0)
  plan = prepare(_utt(path, voice_activity=((1.0, 24.0),) if with_voice_activity else None), config)
  windows = [(p[RATE].start, p[RATE].start + p[RATE].duration) for p in plan]
  assert len(windows) == 3 and windows[0][0] == pytest.approx(0.8, abs=0.04)
  assert windows[-1][1] == pytest.approx(24.2, abs=0.04)
  for (_, e), (s, _), dip in zip(windows, windows[1:], (7.0, 14.5)):
    assert e == s and abs(s - dip) < 0.05


def test_energy_vad_segments_cover_the_speech(tmp_path):
  rng = np.random.default_rng(1)
  regions, t = [], 0.7
  while t < 170:
    length = rng.uniform(1.0, 8.0)
    regions.append((round(t, 2), round(t + length, 2)))
    t += length + rng.uniform(0.5, 4.0)
  path = tmp_path / "long.flac"
  write_audio(path, _bursts(regions, 180.0), RATE)
  config = AudioPrepConfig()
  windows = [(p[RATE].start, p[RATE].start + p[RATE].duration) for p in prepare(_utt(path), config)]
  assert 6 <= len(windows) <= 12 and all(e - s <= 30.0 for s, e in windows)
  for a, b in regions:  # every burst inside one segment (to a VAD frame)
    assert any(s <= a + 0.03 and b - 0.03 <= e for s, e in windows), ((a, b), windows)
  speech = sum(b - a for a, b in regions)
  assert speech <= sum(e - s for s, e in windows) <= speech + sum(b2 - a2 for (_, a2), (b2, _) in
                                                                  zip(regions, regions[1:])) + 0.5


def test_plan_segments_packs_pauses_and_splits_evenly_without_an_envelope():
  config = AudioPrepConfig()  # 30 s segments, 0.2 s pad, 5 s max pause
  regions = [(0.0, 5.0), (6.0, 12.0), (13.0, 20.0), (40.0, 45.0), (46.0, 46.5)]
  assert plan_segments(regions, 0.0, 50.0, 100, config) == [(0.0, 20.2), (39.8, 46.7)]
  assert plan_segments([(0.0, 100.0)], 0.0, 100.0, 100, config) == [(0.0, 25.0), (25.0, 50.0), (50.0, 75.0),
                                                                    (75.0, 100.0)]
  no_pause_limit = AudioPrepConfig(max_pause_seconds=None)
  assert plan_segments(regions, 0.0, 50.0, 100, no_pause_limit) == [(0.0, 20.2), (39.8, 46.7)]
  assert plan_segments([(1.0, 2.0), (25.0, 29.0)], 0.0, 50.0, 100, no_pause_limit) == [(0.8, 29.2)]


# --- memory bound --------------------------------------------------------------------------------------------


def test_a_long_file_is_decoded_in_bounded_windows(tmp_path):
  seconds = 600.0
  regions = [(t + 0.5, t + 4.5) for t in np.arange(0.0, seconds, 5.0)]  # 4 s bursts, 1 s pauses
  path = tmp_path / "ten_minutes.flac"
  write_audio(path, _bursts(regions, seconds), RATE)
  config = AudioPrepConfig(sample_rates=(16000, 24000), max_segment_seconds=30.0, window_seconds=60.0)
  reader = CountingReader()
  full_bytes = int(seconds * RATE) * 4  # the whole file as float32: 38 MB
  tracemalloc.start()
  try:
    plan = prepare(_utt(path), config, reader=reader)
    count = total = 0
    for piece in plan:
      count += 1
      total += piece[16000].duration
      del piece
    _, peak = tracemalloc.get_traced_memory()
  finally:
    tracemalloc.stop()
  assert count == len(plan) >= 20 and total > 0.75 * seconds
  assert len(reader.samples) == 10 + count  # the scan (10 windows of 60 s), then one decode per segment
  assert max(reader.samples[:10]) == 60 * RATE and max(reader.samples[10:]) <= 30 * RATE
  assert sum(reader.samples[:10]) == seconds * RATE
  assert peak < full_bytes / 3, f"peak {peak / 1e6:.1f} MB traced while preparing a {full_bytes / 1e6:.0f} MB file"


# --- bad input: exactly one Reject with the right code ---------------------------------------------------------


def _write(tmp_path, name, wave, rate=RATE, **kwargs):
  path = tmp_path / name
  if kwargs:
    sf.write(path, wave, rate, **kwargs)
  else:
    write_audio(path, wave, rate)
  return path


def _truncated(tmp_path, seconds):
  path = _write(tmp_path, "t.flac", _bursts([(0.0, seconds)], seconds))
  data = path.read_bytes()
  path.write_bytes(data[:int(len(data) * 0.9)])
  return path


def _nan_wav(tmp_path, seconds, value=np.nan):
  x = _bursts([(0.0, seconds)], seconds)
  x[int(0.9 * len(x))] = value
  return _write(tmp_path, "nan.wav", x, subtype="FLOAT")


GOOD = 0.3 * np.sin(np.arange(2 * RATE) * 0.07).astype(np.float32)  # 2 s

CASES = {
    "random_bytes": (lambda p: (p / "junk.flac").write_bytes(os.urandom(3000)) and p / "junk.flac", {}, "unreadable"),
    "empty_file": (lambda p: (p / "empty.flac").write_bytes(b"") or p / "empty.flac", {}, "unreadable"),
    "missing_file": (lambda p: p / "nope.flac", {}, "unreadable"),
    "truncated_flac": (lambda p: _truncated(p, 5.0), {}, "unreadable"),
    "truncated_long_flac": (lambda p: _truncated(p, 80.0), {}, "unreadable"),
    "no_frames": (lambda p: _write(p, "z.wav", np.zeros(0, np.float32)), {}, "empty"),
    "window_past_the_end": (lambda p: _write(p, "a.flac", GOOD), {"start": 5.0}, "empty"),
    "bad_window": (lambda p: _write(p, "a.flac", GOOD), {"start": 1.5, "end": 1.0}, "bad_metadata"),
    "bad_voice_activity": (lambda p: _write(p, "a.flac", _bursts([(0, 40)], 40.0)), {"voice_activity": ((3, 1),)},
                           "bad_metadata"),
    "ten_ms": (lambda p: _write(p, "short.flac", GOOD[:160]), {}, "too_short"),
    "too_long": (lambda p: _write(p, "a.flac", GOOD), {"config": AudioPrepConfig(max_utterance_seconds=1.5)},
                 "too_long"),
    "all_zero": (lambda p: _write(p, "zero.flac", np.zeros(RATE, np.float32)), {}, "silent"),
    "all_zero_long": (lambda p: _write(p, "zero.flac", np.zeros(75 * RATE, np.float32)), {}, "silent"),
    "no_voice_activity_inside": (lambda p: _write(p, "a.flac", _bursts([(0, 40)], 40.0)),
                                 {"voice_activity": ((50.0, 60.0),)}, "silent"),
    "only_clicks_long": (lambda p: _write(p, "a.flac", _bursts([(5, 5.2), (20, 20.3)], 40.0, noise=0)), {},
                         "too_short"),
    "nan_float_wav": (lambda p: _nan_wav(p, 2.0), {}, "non_finite"),
    "inf_float_wav_long": (lambda p: _nan_wav(p, 70.0, np.inf), {}, "non_finite"),
    "three_channels": (lambda p: _write(p, "c3.flac", np.stack([GOOD] * 3, axis=1)),
                       {"config": AudioPrepConfig(max_channels=2)}, "bad_channels"),
    "no_such_channel": (lambda p: _write(p, "c2.flac", np.stack([GOOD] * 2, axis=1)),
                        {"config": AudioPrepConfig(channel=2)}, "bad_channels"),
    "one_hertz": (lambda p: _write(p, "hz.wav", np.full(10, 0.1, np.float32), rate=1), {}, "bad_sample_rate"),
    "missing_transcript": (lambda p: _write(p, "a.flac", GOOD), {"require": True}, "missing_transcript"),
    "blank_transcript": (lambda p: _write(p, "a.flac", GOOD), {"require": True, "transcript": " "},
                         "missing_transcript"),
    "non_utf8_bytes": (lambda p: _write(p, "a.flac", GOOD), {"transcript": b"caf\xe9"}, "bad_transcript"),
    "surrogate_escaped": (lambda p: _write(p, "a.flac", GOOD),
                          {"transcript": b"caf\xe9".decode("utf-8", "surrogateescape")}, "bad_transcript"),
    "replacement_char": (lambda p: _write(p, "a.flac", GOOD), {"transcript": "caf\ufffd"}, "bad_transcript"),
    "control_char": (lambda p: _write(p, "a.flac", GOOD), {"transcript": "hello\x07world"}, "bad_transcript"),
    "not_text": (lambda p: _write(p, "a.flac", GOOD), {"transcript": 42}, "bad_transcript"),
}


@pytest.mark.parametrize("where", ["file", "member"])
def test_any_channel_count_is_downmixed_or_one_channel_taken(tmp_path, where):
  """Six channels (5.1): averaged by default, or the channel asked for; in a file and in an archive member."""
  channels = np.stack([GOOD * (k + 1) / 8 for k in range(6)], axis=1)  # channel k at a distinct level
  path = _write(tmp_path, "surround.flac", channels)
  reader, info, ref = audio_prep.read_file, audio_prep.file_info, AudioRef(str(path))
  if where == "member":
    data = path.read_bytes()
    reader = functools.partial(audio_source.read_native, data=data)
    info = functools.partial(audio_source.ref_info, data=data)
    ref = AudioRef(str(tmp_path / "a.tar"), "surround.flac")
  for channel, want in ((None, channels.mean(axis=1)), (4, channels[:, 4])):
    plan = prepare(Utterance("u", ref), AudioPrepConfig(channel=channel), reader=reader, info=info)
    assert not isinstance(plan, Reject), plan
    [piece] = list(plan)
    np.testing.assert_allclose(piece[RATE].waveform, want, atol=1e-4)


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_gives_exactly_one_reject(tmp_path, case):
  make, kwargs, code = CASES[case]
  kwargs = dict(kwargs)
  path = make(tmp_path)
  config = kwargs.pop("config", AudioPrepConfig(require_transcript=kwargs.pop("require", False)))
  utt = _utt(path, **kwargs)
  result = prepare(utt, config)
  assert isinstance(result, Reject), f"{case}: {result}"
  assert result.code == code, result.reason
  assert result.id == "u1" and result.path == str(path) and len(result.reason) > len(code) + 2


def test_good_input_passes_the_same_checks(tmp_path):
  path = _write(tmp_path, "a.flac", GOOD)
  config = AudioPrepConfig(require_transcript=True)
  for transcript in ("hello world", "caf\u00e9 \u0928\u092e\u0938\u094d\u200d\u0924\u0947", "x"):
    assert len(_segments(prepare(_utt(path, transcript=transcript), config))) == 1


def test_check_transcript():
  check = audio_prep.check_transcript
  assert check(None, False) is None and check("", False) is None and check("ok", True) is None
  assert check(None, True).startswith("missing_transcript") and check("\t", True).startswith("bad_transcript")
  assert "not UTF-8" in check(b"\xff", False) and "bytes, not str" in check(b"ok", False)
  assert "U+000A" in check("a\nb", False)


# --- injected sources (archive members) ---------------------------------------------------------------------


def test_injected_reader_and_info_for_archive_members():
  waves = {"a.flac": (GOOD, RATE), "nan.flac": (np.full(RATE, np.nan, np.float32), RATE)}

  def info(ref):
    if ref.member not in waves:
      raise AudioDecodeError(str(ref), "no such member")
    wave, rate = waves[ref.member]
    return rate, len(wave), 1

  def reader(ref, start, end):
    wave, rate = waves[ref.member]
    return wave[int(round((start or 0) * rate)):None if end is None else int(round(end * rate))], rate

  def run(member):
    return prepare(Utterance("m", AudioRef("x.tar", member)), AudioPrepConfig(), reader=reader, info=info)

  (piece,) = _segments(run("a.flac"))
  np.testing.assert_array_equal(piece[RATE].waveform, GOOD)
  assert run("nan.flac").code == "non_finite"
  bad = run("gone.flac")
  assert bad.code == "unreadable" and bad.path == "x.tar#gone.flac" and "no such member" in bad.reason
  with pytest.raises(ValueError, match="archive member"):  # the default reader cannot read members
    prepare(Utterance("m", AudioRef("x.tar", "a.flac")), AudioPrepConfig())


def test_a_reject_code_named_by_the_source_is_kept():
  def info(ref):
    raise AudioDecodeError(str(ref), "unsafe_path: member path '../x.flac' has a '..' component")

  bad = prepare(Utterance("m", AudioRef("x.tar", "../x.flac")), AudioPrepConfig(), reader=None, info=info)
  assert bad.code == "unsafe_path" and bad.reason.startswith("unsafe_path: member path")


@pytest.mark.skipif("MP3" not in sf.available_formats(), reason="this libsndfile cannot write MP3")
def test_mp3_windows_are_decoded_exactly(tmp_path):
  regions = [(1.0, 9.0), (10.0, 19.0), (20.0, 29.0), (30.5, 38.0)]
  path = tmp_path / "long.mp3"
  t = np.arange(40 * RATE) / RATE
  tones = np.sin(2 * np.pi * 440 * t) * (1 + 0.5 * np.sin(2 * np.pi * 0.7 * t))  # tonal: libsndfile's seeks fail
  sf.write(path, 0.3 * tones, RATE, format="MP3")  # the regions come from voice_activity
  full = load_audio(path, None)  # decoded from the start: exact
  config = AudioPrepConfig(max_segment_seconds=10.0, window_seconds=15.0)
  pieces = list(prepare(_utt(path, voice_activity=tuple(regions)), config))
  assert len(pieces) == 4
  for piece in pieces:
    seg = piece[RATE]
    first = int(round(seg.start * RATE))
    np.testing.assert_allclose(seg.waveform, full[first:first + len(seg.waveform)], atol=1e-6)  # block rounding
  (piece,) = prepare(_utt(path, start=12.5, end=14.0), config)
  np.testing.assert_allclose(piece[RATE].waveform, full[200000:224000], atol=1e-6)


def test_a_file_changed_after_the_scan_raises(tmp_path):
  path = _write(tmp_path, "a.flac", _bursts([(1, 20), (25, 40)], 45.0))
  plan = prepare(_utt(path), AudioPrepConfig())
  path.write_bytes(b"gone")
  with pytest.raises(AudioDecodeError):
    list(plan)


# --- configuration and throughput ---------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs,key", [
    ({"sample_rates": ()}, "sample_rates"), ({"sample_rates": (16000.5,)}, "sample_rates"),
    ({"min_segment_seconds": 20.0}, "min_segment_seconds"), ({"window_seconds": 10.0}, "window_seconds"),
    ({"max_channels": 0}, "max_channels"), ({"min_sample_rate": 0}, "min_sample_rate"),
    ({"segment_pad_seconds": 10.0}, "segment_pad_seconds"),
])
def test_config_errors_name_the_key(kwargs, key):
  with pytest.raises(ValueError, match=key):
    AudioPrepConfig(**kwargs)


def test_measure_throughput_on_the_demo_corpus():
  folder = os.path.join(DEMO, "test", "101", "10102")
  names = sorted(n for n in os.listdir(folder) if n.endswith(".flac"))
  utts = [Utterance(n[:-5], AudioRef(os.path.join(folder, n))) for n in names]
  utts.append(Utterance("broken", AudioRef(os.path.join(folder, "missing.flac"))))
  stats = audio_prep.measure_throughput(utts, AudioPrepConfig(sample_rates=(16000, 24000)))
  assert stats.utterances == len(names) + 1 and stats.segments == len(names)
  assert stats.rejects == {"unreadable": 1}
  expected = sum(sf.info(os.path.join(folder, n)).duration for n in names)
  assert math.isclose(stats.audio_seconds, expected, rel_tol=1e-6)
  assert stats.busy_seconds > 0 and stats.hours_per_second > 0 and "segments" in stats.summary()
