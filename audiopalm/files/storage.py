"""One storage layer: every byte the stack reads or writes on local disk or an object store (gs://) goes here.

    data = read_bytes("gs://b/LibriLight/100/x.flac")          # whole object: one GET
    head = read_range("gs://b/tokens/x.tfrecord-00003-of-00010", 4096, 11_000)   # one ranged GET
    with open_sequential("gs://b/emilia/EN_B00000.tar") as f:   # streamed in large blocks, front to back
      ...
    write_bytes("gs://b/tokens/metadata.json", blob)            # atomic: readers see the old or the new object
    if create_exclusive("gs://b/tokens/claims/00003.0", b"..."):   # atomic create-if-absent (a claim, a lock)
      ...
    upload("/tmp/shard.tfrecord", "gs://b/tokens/x.tfrecord-00003-of-00010", exclusive=True)   # commit a file
    before = counts(); ...; print(counts() - before)            # requests and bytes, this process

Access patterns, each with one explicit policy:

- **whole-object reads** (`read_bytes`): one GET of the whole object (audio files, manifests, indexes, specs);
- **ranged reads** (`read_range`): one GET of exactly the bytes asked for (a record of a token shard): no read-ahead,
  so random access costs what it reads;
- **sequential streams** (`open_sequential`): a file object reading `SEQUENTIAL_BLOCK` bytes per GET with
  read-ahead (archives scanned member by member, files too large to hold);
- **atomic writes** (`write_bytes`, `upload`): the target appears whole or not at all. Local: a temporary file in
  the target's directory, fsynced, renamed over the target. GCS: one upload (a single request, or a resumable
  upload that the store makes visible only when finished).
- **exclusive creates** (`create_exclusive`, `upload(exclusive=True)`): local `O_EXCL` / `link`; GCS
  `ifGenerationMatch=0`; exactly one of several racing writers succeeds.

Local paths (or `file://`) use Python's own I/O; other URLs use fsspec, gs:// through `gcsfs`. gcsfs is set up so
that it never probes the bucket type over gRPC (`GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false`, unless set: the probe
costs 60 s per call on networks that block gRPC, and against emulators), and etils' `epath` (orbax's paths) uses
fsspec rather than `tf.io.gfile` for URLs (`EPATH_USE_TF=false`, unless set), so checkpoints go through the same
client. Both are set when this module is imported, before gcsfs is. Credentials: `AUDIOPALM_GCS_TOKEN` if set
(a gcsfs `token`: 'anon', 'google_default', a service-account JSON path), anonymous when `STORAGE_EMULATOR_HOST`
names an emulator, else gcsfs's default (application default credentials, then the metadata server).

Counting: `counts()` is this process's `IOCounts` (requests, bytes read, bytes written) since it started. For
gs:// they are counted on the wire (every HTTP request and body byte, listings and metadata included); for local
files, each call (or each read of a stream) is one request and bytes are what it returned or wrote. To see every
remote request, set `AUDIOPALM_STORAGE_TRACE=<file>`: each request ("REQ <method> <url>") and each body chunk
received ("RX <bytes> <url>") is appended to it (the storage benchmark and tests count with it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import io
import os
import posixpath
import shutil
import threading
import uuid
from typing import IO, Any, Callable, Iterator

os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
os.environ.setdefault("EPATH_USE_TF", "false")

SEQUENTIAL_BLOCK = 64 << 20  # bytes per GET of a sequential stream (a LibriLight file is ~30 MB: one GET)


# ---------------------------------------------------------------------------------------------------- counts


@dataclasses.dataclass(frozen=True)
class IOCounts:
  """Storage traffic: requests made, body bytes read and written."""

  requests: int = 0
  bytes_read: int = 0
  bytes_written: int = 0

  def __sub__(self, other: "IOCounts") -> "IOCounts":
    return IOCounts(self.requests - other.requests, self.bytes_read - other.bytes_read,
                    self.bytes_written - other.bytes_written)

  def __add__(self, other: "IOCounts") -> "IOCounts":
    return IOCounts(self.requests + other.requests, self.bytes_read + other.bytes_read,
                    self.bytes_written + other.bytes_written)

  def to_json(self) -> dict[str, int]:
    return dataclasses.asdict(self)


_lock = threading.Lock()
_counts = {"requests": 0, "bytes_read": 0, "bytes_written": 0}


def _count(requests: int = 0, read: int = 0, written: int = 0) -> None:
  with _lock:
    _counts["requests"] += requests
    _counts["bytes_read"] += read
    _counts["bytes_written"] += written


def counts() -> IOCounts:
  """This process's storage traffic so far (subtract two readings for the traffic in between)."""
  with _lock:
    return IOCounts(**_counts)


# ----------------------------------------------------------------------------------------------- filesystems


def is_remote(path: str | os.PathLike) -> bool:
  """Whether `path` is a URL of an object store or other fsspec filesystem (not a local path or file://)."""
  path = os.fspath(path)
  return "://" in path and not path.startswith("file://")


def _local(path: str | os.PathLike) -> str:
  return os.fspath(path).removeprefix("file://")


def join(path: str | os.PathLike, *parts: str) -> str:
  """`path` joined with `parts` by '/' (local paths and URLs alike)."""
  return posixpath.join(os.fspath(path), *parts)


def _trace_config() -> Any:
  """aiohttp hooks that count gcsfs's requests and body bytes."""
  import aiohttp  # pylint: disable=import-outside-toplevel  # (gcsfs's HTTP client)

  # Debugging and benchmarks: a file to append every request ("REQ <method> <url>") and every body chunk
  # received ("RX <bytes> <url>") to.
  trace = os.environ.get("AUDIOPALM_STORAGE_TRACE")

  def log(line: str) -> None:
    with _lock, open(trace, "a", encoding="utf-8") as f:
      f.write(line + "\n")

  async def on_request(session, context, params):  # pylint: disable=unused-argument
    _count(requests=1)
    if trace:
      log(f"REQ {params.method} {params.url}")

  async def on_received(session, context, params):  # pylint: disable=unused-argument
    _count(read=len(params.chunk))
    if trace:
      log(f"RX {len(params.chunk)} {params.url}")

  async def on_sent(session, context, params):  # pylint: disable=unused-argument
    _count(written=len(params.chunk))

  config = aiohttp.TraceConfig()
  config.on_request_start.append(on_request)
  config.on_response_chunk_received.append(on_received)
  config.on_request_chunk_sent.append(on_sent)
  return config


_filesystems: dict[tuple, Any] = {}


def filesystem(path: str) -> tuple[Any, str]:
  """(fsspec filesystem, path as it takes it) for a URL; one instance per process, protocol and endpoint."""
  import fsspec  # pylint: disable=import-outside-toplevel

  protocol = path.split("://", 1)[0]
  emulator = os.environ.get("STORAGE_EMULATOR_HOST")
  key = (protocol, emulator, os.environ.get("AUDIOPALM_GCS_TOKEN"), os.getpid())
  with _lock:
    fs = _filesystems.get(key)
  if fs is None:
    if protocol in ("gs", "gcs"):
      import gcsfs  # pylint: disable=import-outside-toplevel

      token = os.environ.get("AUDIOPALM_GCS_TOKEN") or ("anon" if emulator else None)
      # No listings cache: existence checks and listings must see what other processes wrote a moment ago.
      fs = gcsfs.GCSFileSystem(token=token, skip_instance_cache=True, use_listings_cache=False,
                               session_kwargs={"trace_configs": [_trace_config()]})
    else:
      fs = fsspec.filesystem(protocol)
    with _lock:
      fs = _filesystems.setdefault(key, fs)
  return fs, fs._strip_protocol(path)  # pylint: disable=protected-access


def _url(fs: Any, path: str) -> str:
  return fs.unstrip_protocol(path)


# ------------------------------------------------------------------------------------------------- metadata


def _either(path: str | os.PathLike, local: Callable[[str], Any], remote: Callable[[Any, str], Any]) -> Any:
  """`local(the local path)`, or `remote(filesystem, its path)` for a URL."""
  path = os.fspath(path)
  if not is_remote(path):
    return local(_local(path))
  return remote(*filesystem(path))


def exists(path: str | os.PathLike) -> bool:
  """Whether a file (or, locally, a directory) exists at `path`."""
  return _either(path, os.path.exists, lambda fs, p: fs.exists(p))


def is_file(path: str | os.PathLike) -> bool:
  """Whether a file exists at `path` (object stores: one request, the object's metadata)."""
  path = os.fspath(path)
  if not is_remote(path):
    return os.path.isfile(_local(path))
  fs, p = filesystem(path)
  if not hasattr(fs, "_get_object"):
    return fs.isfile(p)
  from fsspec import asyn  # pylint: disable=import-outside-toplevel
  try:
    asyn.sync(fs.loop, fs._get_object, p)  # pylint: disable=protected-access  # (fs.info lists on a miss too)
  except FileNotFoundError:
    return False
  return True


def isdir(path: str | os.PathLike) -> bool:
  """Whether `path` is a directory (on an object store: a prefix with objects under it)."""
  return _either(path, os.path.isdir, lambda fs, p: fs.isdir(p))


def size(path: str | os.PathLike) -> int:
  """The file's size in bytes (FileNotFoundError if it does not exist)."""
  return _either(path, os.path.getsize, lambda fs, p: int(fs.size(p)))


def listdir(path: str | os.PathLike) -> list[str]:
  """The names (not paths) of the files and directories directly in `path`, sorted; [] if there is none."""
  path = os.fspath(path)
  if not is_remote(path):
    return sorted(os.listdir(_local(path))) if os.path.isdir(_local(path)) else []
  fs, p = filesystem(path)
  try:
    entries = fs.ls(p, detail=False, refresh=True)
  except FileNotFoundError:
    return []
  return sorted({e.rstrip("/").rsplit("/", 1)[-1] for e in entries if e.rstrip("/") != p.rstrip("/")})


def list_sizes(path: str | os.PathLike) -> dict[str, int]:
  """{name: size in bytes} of the files (not directories) directly in `path`; {} if there is none.

  Object stores: one paginated listing (sizes come with it: no request per file)."""
  path = os.fspath(path)
  if not is_remote(path):
    local = _local(path)
    if not os.path.isdir(local):
      return {}
    with os.scandir(local) as entries:
      return {e.name: e.stat().st_size for e in sorted(entries, key=lambda e: e.name) if e.is_file()}
  fs, p = filesystem(path)
  try:
    entries = fs.ls(p, detail=True, refresh=True)
  except FileNotFoundError:
    return {}
  return {e["name"].rstrip("/").rsplit("/", 1)[-1]: int(e["size"]) for e in sorted(entries, key=lambda e: e["name"])
          if e.get("type") == "file"}


def find(root: str | os.PathLike) -> list[str]:
  """Every file below `root`, recursively, as full paths (URLs keep their scheme), sorted.

  Object stores: one paginated listing of the prefix (not a walk of directories). Local: symbolic links to
  directories are not followed."""
  root = os.fspath(root)
  if not is_remote(root):
    found = []
    for folder, dirs, names in os.walk(_local(root)):
      dirs.sort()
      found.extend(os.path.join(folder, n) for n in names)
    return sorted(found)
  fs, p = filesystem(root)
  return sorted(_url(fs, f) for f in fs.find(p))


def makedirs(path: str | os.PathLike) -> None:
  """Creates a local directory and its parents (object stores have no directories: nothing to do)."""
  if not is_remote(path):
    os.makedirs(_local(path), exist_ok=True)


def remove(path: str | os.PathLike, *, missing_ok: bool = True) -> None:
  """Deletes a file."""
  path = os.fspath(path)
  try:
    if not is_remote(path):
      os.remove(_local(path))
    else:
      fs, p = filesystem(path)
      fs.rm_file(p)
  except FileNotFoundError:
    if not missing_ok:
      raise


def rename(src: str | os.PathLike, dst: str | os.PathLike) -> None:
  """Moves a file, replacing `dst` (object stores: a server-side copy, then a delete of `src`)."""
  src, dst = os.fspath(src), os.fspath(dst)
  if is_remote(src) != is_remote(dst):
    raise ValueError(f"rename across filesystems: {src} -> {dst}")
  if not is_remote(src):
    os.replace(_local(src), _local(dst))
    return
  fs, s = filesystem(src)
  fs.mv(s, filesystem(dst)[1])


# ---------------------------------------------------------------------------------------------------- reads


def read_bytes(path: str | os.PathLike) -> bytes:
  """The whole file, in one request."""
  path = os.fspath(path)
  if not is_remote(path):
    with open(_local(path), "rb") as f:
      data = f.read()
    _count(requests=1, read=len(data))
    return data
  fs, p = filesystem(path)
  return fs.cat_file(p)


def read_text(path: str | os.PathLike) -> str:
  """The whole file as UTF-8 text, in one request."""
  return read_bytes(path).decode("utf-8")


def read_range(path: str | os.PathLike, start: int, length: int) -> bytes:
  """Bytes [start, start + length) of the file, in one request (fewer at the end of the file)."""
  path = os.fspath(path)
  if length <= 0:
    return b""
  if not is_remote(path):
    with open(_local(path), "rb") as f:
      f.seek(start)
      data = f.read(length)
    _count(requests=1, read=len(data))
    return data
  fs, p = filesystem(path)
  return fs.cat_file(p, start=start, end=start + length)


class _CountedFile(io.RawIOBase):
  """A local file whose reads are counted (one request per read call)."""

  def __init__(self, path: str):
    super().__init__()
    self._f = open(path, "rb")  # pylint: disable=consider-using-with  # closed by close()

  def readable(self) -> bool:
    return True

  def seekable(self) -> bool:
    return True

  def readinto(self, buffer) -> int:
    n = self._f.readinto(buffer)
    _count(requests=1, read=n or 0)
    return n

  def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
    return self._f.seek(offset, whence)

  def tell(self) -> int:
    return self._f.tell()

  def close(self) -> None:
    self._f.close()
    super().close()


class _BlockReader(io.RawIOBase):
  """A remote object read front to back by ranged GETs of `block` bytes: no metadata request first, and a short
  block (or a range past the end: HTTP 416) ends it. So a file smaller than a block costs exactly one GET."""

  def __init__(self, path: str, block: int):
    super().__init__()
    self._fs, self._path = filesystem(path)
    self._name, self._block = path, block
    self._position, self._buffer, self._offset, self._eof = 0, memoryview(b""), 0, False

  def readable(self) -> bool:
    return True

  def _fetch(self) -> None:
    try:
      data = self._fs.cat_file(self._path, start=self._position, end=self._position + self._block)
    except Exception as e:  # pylint: disable=broad-except  # gcsfs's HttpError: only 416 means the end
      if getattr(e, "code", None) != 416:
        raise
      data = b""  # past the end (at 0: an empty object, which GCS answers with 416 too)
    self._position += len(data)
    self._eof = len(data) < self._block
    self._buffer, self._offset = memoryview(data), 0

  def readinto(self, buffer) -> int:
    if self._offset == len(self._buffer) and not self._eof:
      self._fetch()
    n = min(len(buffer), len(self._buffer) - self._offset)
    buffer[:n] = self._buffer[self._offset:self._offset + n]
    self._offset += n
    return n


def open_sequential(path: str | os.PathLike) -> IO[bytes]:
  """A binary file object for reading front to back, not seekable: `SEQUENTIAL_BLOCK` bytes per request."""
  path = os.fspath(path)
  if not is_remote(path):
    return io.BufferedReader(_CountedFile(_local(path)), buffer_size=1 << 20)
  return io.BufferedReader(_BlockReader(path, SEQUENTIAL_BLOCK), buffer_size=1 << 20)


# --------------------------------------------------------------------------------------------------- writes


def _fsync_dir(directory: str) -> None:
  fd = os.open(directory or ".", os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


def temp_name(path: str | os.PathLike) -> str:
  """A temporary path beside `path` that no other process or thread uses: `.<name>.tmp-<pid>-<random>`."""
  directory, name = posixpath.split(os.fspath(path))
  return posixpath.join(directory, f".{name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def write_bytes(path: str | os.PathLike, data: bytes) -> str:
  """Writes `data` to `path` atomically, replacing any earlier file (creating local directories); returns the path.

  A reader (another host, a rerun, a crash's survivor) sees the old file or the new one, never a partial one."""
  path = os.fspath(path)
  if is_remote(path):
    fs, p = filesystem(path)
    fs.pipe_file(p, data)  # one request: the object appears whole
    return path
  target = _local(path)
  directory = os.path.dirname(target)
  if directory:
    os.makedirs(directory, exist_ok=True)
  temp = temp_name(target)
  try:
    with open(temp, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(temp, target)
    _fsync_dir(directory)
  finally:
    if os.path.exists(temp):  # the write or the rename failed: leave no litter beside the target
      os.remove(temp)
  _count(requests=1, written=len(data))
  return path


def write_text(path: str | os.PathLike, text: str) -> str:
  """Writes `text` (UTF-8, newlines as given) to `path` atomically."""
  return write_bytes(path, text.encode("utf-8"))


def create_exclusive(path: str | os.PathLike, data: bytes) -> bool:
  """Creates `path` holding `data` if nothing is there yet: True if this call created it, False if it existed.

  Atomic against every other writer (local `O_EXCL` on a file fully written under a temporary name, then linked;
  GCS `ifGenerationMatch=0`): of several racing callers exactly one gets True, and a reader never sees a partial
  file."""
  path = os.fspath(path)
  if is_remote(path):
    fs, p = filesystem(path)
    try:
      fs.pipe_file(p, data, mode="create")
    except FileExistsError:
      return False
    return True
  target = _local(path)
  directory = os.path.dirname(target)
  if directory:
    os.makedirs(directory, exist_ok=True)
  temp = temp_name(target)
  with open(temp, "wb") as f:
    f.write(data)
    f.flush()
    os.fsync(f.fileno())
  try:
    return _link_exclusive(temp, target)
  finally:
    os.remove(temp)
    _count(requests=1, written=len(data))


def _link_exclusive(temp: str, target: str) -> bool:
  try:
    os.link(temp, target)  # fails if target exists: the atomic create-if-absent of a complete file
  except FileExistsError:
    return False
  except OSError as e:  # a filesystem without hard links: O_EXCL on the target, then the data
    if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.ENOSYS):
      raise
    try:
      fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
      return False
    try:  # (not atomic for readers: on such filesystems a reader may see the file before its data)
      with os.fdopen(fd, "wb") as out, open(temp, "rb") as src:
        shutil.copyfileobj(src, out)
        out.flush()
        os.fsync(out.fileno())
    except BaseException:
      os.remove(target)
      raise
  _fsync_dir(os.path.dirname(target))
  return True


def upload(local_file: str | os.PathLike, path: str | os.PathLike, *, exclusive: bool = False) -> bool:
  """Puts a finished local file at `path` atomically, consuming `local_file` (moved or deleted).

  `exclusive`: only if nothing is at `path` yet (returns False, and `path` is left as it was, if something is).
  Local targets: a rename (a link for `exclusive`), after an fsync. GCS: one upload, visible only when complete
  (`ifGenerationMatch=0` for `exclusive`). Returns True when the file was put at `path`."""
  local_file, path = _local(local_file), os.fspath(path)
  try:
    if is_remote(path):
      fs, p = filesystem(path)
      try:
        fs.put_file(local_file, p, mode="create" if exclusive else "overwrite")
      except FileExistsError:
        return False
      return True
    target = _local(path)
    directory = os.path.dirname(target)
    if directory:
      os.makedirs(directory, exist_ok=True)
    with open(local_file, "rb") as f:
      os.fsync(f.fileno())
    num_bytes = os.path.getsize(local_file)
    if exclusive:
      done = _link_exclusive(local_file, target)
    else:
      os.replace(local_file, target)
      _fsync_dir(directory)
      done = True
    _count(requests=1, written=num_bytes if done else 0)
    return done
  finally:
    with contextlib.suppress(FileNotFoundError):
      os.remove(local_file)


@contextlib.contextmanager
def staging_file(path: str | os.PathLike, staging_dir: str | None = None) -> Iterator[str]:
  """A local temporary file for building what will go to `path` (then `upload` it): beside `path` when `path` is
  local (so that the final rename stays on one filesystem), else in `staging_dir` (default: the system's temporary
  directory). Deleted on exit if still there."""
  path = os.fspath(path)
  if is_remote(path):
    import tempfile  # pylint: disable=import-outside-toplevel
    fd, temp = tempfile.mkstemp(prefix="audiopalm-", suffix="-" + posixpath.basename(path), dir=staging_dir)
    os.close(fd)
  else:
    temp = temp_name(_local(path))
    directory = os.path.dirname(temp)
    if directory:
      os.makedirs(directory, exist_ok=True)
  try:
    yield temp
  finally:
    with contextlib.suppress(FileNotFoundError):
      os.remove(temp)


__all__ = ["IOCounts", "SEQUENTIAL_BLOCK", "counts", "create_exclusive", "exists", "filesystem", "find", "is_file", "is_remote",
           "isdir", "join", "list_sizes", "listdir", "makedirs", "open_sequential", "read_bytes", "read_range", "read_text",
           "remove", "rename", "size", "staging_file", "temp_name", "upload", "write_bytes", "write_text"]
