import os
import uuid

import pytest
import tensorflow as tf

from audiopalm.files import atomic


def test_writes_and_replaces_an_existing_file(tmp_path):
  target = tmp_path / "sub" / "spec.json"
  assert atomic.write_text_atomic(target, "old") == str(target)
  atomic.write_text_atomic(str(target), "néw\n")  # over the old file, not refused
  assert target.read_bytes() == "néw\n".encode()
  assert os.listdir(target.parent) == ["spec.json"]  # no temporary left


def test_bytes_on_a_url_filesystem():
  target = f"ram://atomic_test/{uuid.uuid4().hex}/x.npy"  # through tf.io.gfile, like gs://
  data = bytes(range(256))
  atomic.write_bytes_atomic(target, data)
  atomic.write_bytes_atomic(target, data[::-1])
  with tf.io.gfile.GFile(target, "rb") as f:
    assert f.read() == data[::-1]
  assert tf.io.gfile.listdir(os.path.dirname(target)) == ["x.npy"]


def test_failed_rename_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
  target = tmp_path / "report.json"
  target.write_text("complete")

  def fail(*args, **kwargs):
    raise OSError("disk went away")

  monkeypatch.setattr(tf.io.gfile, "rename", fail)
  with pytest.raises(OSError, match="disk went away"):
    atomic.write_text_atomic(target, "new")
  assert target.read_text() == "complete"
  assert os.listdir(tmp_path) == ["report.json"]
