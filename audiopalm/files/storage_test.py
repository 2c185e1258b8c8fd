"""The storage layer on local disk and on a real GCS emulator (fake-gcs-server on loopback): same contract, and the
request and byte counts each access pattern promises."""

import concurrent.futures
import os

import pytest

from audiopalm.files import storage


@pytest.fixture(params=["local", "gcs"])
def root(request, tmp_path) -> str:
  if request.param == "local":
    return str(tmp_path / "root")
  return request.getfixturevalue("gcs_bucket") + "/root"


def test_write_read_list_remove(root):
  path = storage.join(root, "a", "x.bin")
  assert not storage.exists(path)
  storage.write_bytes(path, b"0123456789")
  storage.write_text(storage.join(root, "a", "y.txt"), "héllo")
  storage.write_bytes(storage.join(root, "b", "deep", "z.bin"), b"z")
  assert storage.exists(path) and storage.size(path) == 10
  assert storage.read_bytes(path) == b"0123456789"
  assert storage.read_text(storage.join(root, "a", "y.txt")) == "héllo"
  assert storage.read_range(path, 3, 4) == b"3456"
  assert storage.read_range(path, 8, 100) == b"89"
  assert storage.listdir(storage.join(root, "a")) == ["x.bin", "y.txt"]
  assert storage.listdir(root) == ["a", "b"]
  assert storage.listdir(storage.join(root, "nothing")) == []
  assert storage.isdir(storage.join(root, "b")) and not storage.isdir(storage.join(root, "nothing"))
  assert storage.find(root) == sorted([path, storage.join(root, "a", "y.txt"), storage.join(root, "b", "deep", "z.bin")])
  storage.write_bytes(path, b"new")  # replaces
  assert storage.read_bytes(path) == b"new"
  storage.rename(path, storage.join(root, "a", "moved.bin"))
  assert not storage.exists(path) and storage.read_bytes(storage.join(root, "a", "moved.bin")) == b"new"
  storage.remove(storage.join(root, "a", "moved.bin"))
  storage.remove(storage.join(root, "a", "moved.bin"))  # missing_ok
  with pytest.raises(FileNotFoundError):
    storage.remove(storage.join(root, "a", "moved.bin"), missing_ok=False)
  with pytest.raises(FileNotFoundError):
    storage.read_bytes(storage.join(root, "missing"))
  assert [n for n in storage.listdir(storage.join(root, "a")) if ".tmp-" in n] == []  # no temporary litter


def test_open_sequential_streams_the_file(root):
  data = os.urandom(3 << 20)
  path = storage.join(root, "big.bin")
  storage.write_bytes(path, data)
  with storage.open_sequential(path) as f:
    chunks = []
    while chunk := f.read(100_000):
      chunks.append(chunk)
  assert b"".join(chunks) == data


def test_create_exclusive_has_one_winner(root):
  path = storage.join(root, "claims", "shard-00001")
  with concurrent.futures.ThreadPoolExecutor(8) as pool:
    won = list(pool.map(lambda i: storage.create_exclusive(path, f"owner {i}".encode()), range(8)))
  assert sum(won) == 1
  assert storage.read_bytes(path) == f"owner {won.index(True)}".encode()
  assert not storage.create_exclusive(path, b"late")


def test_upload_commits_a_local_file(root, tmp_path):
  target = storage.join(root, "shards", "s.tfrecord")
  with storage.staging_file(target) as temp:
    with open(temp, "wb") as f:
      f.write(b"first")
    assert storage.upload(temp, target, exclusive=True)
    assert not os.path.exists(temp)  # consumed
  with storage.staging_file(target) as temp:
    with open(temp, "wb") as f:
      f.write(b"second")
    assert not storage.upload(temp, target, exclusive=True)  # refused: the first stays
  assert storage.read_bytes(target) == b"first"
  with storage.staging_file(target) as temp:
    with open(temp, "wb") as f:
      f.write(b"third")
    assert storage.upload(temp, target)
  assert storage.read_bytes(target) == b"third"
  assert [n for n in storage.listdir(storage.join(root, "shards"))] == ["s.tfrecord"]


def test_gcs_requests_and_bytes_are_counted_on_the_wire(gcs_bucket):
  path = f"{gcs_bucket}/counted.bin"
  data = os.urandom(1 << 20)
  before = storage.counts()
  storage.write_bytes(path, data)
  written = storage.counts() - before
  assert written.requests == 1 and len(data) <= written.bytes_written < len(data) + 4096
  before = storage.counts()
  assert storage.read_bytes(path) == data
  read = storage.counts() - before
  assert (read.requests, read.bytes_read) == (1, len(data))  # whole object: one GET, each byte once
  before = storage.counts()
  assert storage.read_range(path, 1000, 11_000) == data[1000:12_000]
  ranged = storage.counts() - before
  assert (ranged.requests, ranged.bytes_read) == (1, 11_000)  # exactly the range: no read-ahead
  before = storage.counts()
  with storage.open_sequential(path) as f:
    assert f.read() == data
  streamed = storage.counts() - before
  assert (streamed.requests, streamed.bytes_read) == (1, len(data))  # one GET: the file is smaller than a block


def test_local_reads_are_counted(tmp_path):
  path = str(tmp_path / "x.bin")
  storage.write_bytes(path, b"abcdef")
  before = storage.counts()
  storage.read_bytes(path)
  storage.read_range(path, 1, 2)
  delta = storage.counts() - before
  assert (delta.requests, delta.bytes_read) == (2, 8)


def test_failed_local_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
  target = tmp_path / "report.json"
  target.write_text("complete")

  def fail(*args, **kwargs):
    raise OSError("disk went away")

  monkeypatch.setattr(os, "replace", fail)
  with pytest.raises(OSError, match="disk went away"):
    storage.write_text(target, "new")
  assert target.read_text() == "complete"
  assert os.listdir(tmp_path) == ["report.json"]


def test_list_sizes(root):
  storage.write_bytes(storage.join(root, "d", "a"), b"abc")
  storage.write_bytes(storage.join(root, "d", "sub", "b"), b"x")
  assert storage.list_sizes(storage.join(root, "d")) == {"a": 3}
  assert storage.list_sizes(storage.join(root, "none")) == {}


def test_is_file(root):
  storage.write_bytes(storage.join(root, "d", "a"), b"abc")
  assert storage.is_file(storage.join(root, "d", "a"))
  assert not storage.is_file(storage.join(root, "d")) and not storage.is_file(storage.join(root, "d", "b"))


def test_a_missing_object_costs_one_request(gcs_bucket):
  before = storage.counts()
  assert not storage.is_file(f"{gcs_bucket}/nothing/here")
  assert (storage.counts() - before).requests == 1


def test_an_empty_object_streams_as_empty(root):
  path = storage.join(root, "empty.tar")
  storage.write_bytes(path, b"")
  with storage.open_sequential(path) as f:
    assert f.read() == b""
