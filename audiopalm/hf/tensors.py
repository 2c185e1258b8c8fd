"""The tensors and config of a `transformers` `save_pretrained` directory, for weight importers.

    config = read_config(directory)                       # config.json as a dict
    t = TensorSet(read_tensors(directory), "EnCodec")     # name → float32 numpy array
    w = t.take("encoder.layers.0.conv.bias")              # marks the tensor used
    t.check_all_used()                                    # error naming tensors nothing read
    r = SafetensorsReader(directory); r.get(name, rows)    # lazy: one tensor (or rows of it) per ranged read
    check_shapes(expected_abstract_tree, converted_tree, "EnCodec")

Importers must use every tensor of a checkpoint and fill every parameter with the right shape; anything
else is an error naming the tensors, never a silent approximation.
"""

from __future__ import annotations

import collections
import dataclasses
import io
import json
import struct
from typing import Any, Iterable, Mapping

import jax
import ml_dtypes
import numpy as np

from audiopalm.files import storage


def read_config(directory: str) -> dict[str, Any]:
  """config.json of a `save_pretrained` directory."""
  path = storage.join(directory, "config.json")
  if not storage.is_file(path):
    raise FileNotFoundError(f"{path} does not exist: expected a transformers save_pretrained directory")
  return json.loads(storage.read_text(path))


def read_tensors(directory: str) -> dict[str, np.ndarray]:
  """All tensors of a `save_pretrained` directory (safetensors, possibly sharded; or pytorch_model.bin)."""
  files = _safetensors_files(directory)
  if files:
    from safetensors.numpy import load  # pylint: disable=import-outside-toplevel
    tensors = {}
    for f in files:
      tensors.update(load(storage.read_bytes(f)))
    return tensors
  torch_file = storage.join(directory, "pytorch_model.bin")
  if storage.is_file(torch_file):
    try:
      import torch  # pylint: disable=import-outside-toplevel
    except ImportError as e:
      raise ImportError(f"{directory} has only pytorch_model.bin: install torch to read it, or convert the "
                        "checkpoint to safetensors") from e
    state = torch.load(io.BytesIO(storage.read_bytes(torch_file)), map_location="cpu", weights_only=True)
    return {k: v.float().numpy() for k, v in state.items()}
  raise FileNotFoundError(f"no *.safetensors or pytorch_model.bin in {directory}")


def _safetensors_files(directory: str) -> list[str]:
  """The `*.safetensors` files directly in `directory`, sorted."""
  return [storage.join(directory, name) for name in storage.list_sizes(directory) if name.endswith(".safetensors")]


class TensorSet:
  """A checkpoint's tensors by name, tracking which were used."""

  def __init__(self, tensors: Mapping[str, np.ndarray], what: str = "checkpoint"):
    self.tensors = dict(tensors)
    self.what = what
    self.used: set[str] = set()

  def __contains__(self, name: str) -> bool:
    return name in self.tensors

  def take(self, name: str) -> np.ndarray:
    """The tensor as float32, marked used; a missing name is a KeyError naming it."""
    if name not in self.tensors:
      raise KeyError(f"{self.what} checkpoint has no tensor {name!r}")
    self.used.add(name)
    return np.asarray(self.tensors[name], np.float32)

  def ignore(self, names: Iterable[str]) -> None:
    """Mark tensors with no numeric meaning for the model (e.g. buffers) as used."""
    self.used.update(n for n in names if n in self.tensors)

  def weight_norm(self, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    """(g, v) of a weight-normalised torch module, in either spelling (parametrizations or weight_g/_v)."""
    if f"{prefix}.parametrizations.weight.original0" in self.tensors:
      return (self.take(f"{prefix}.parametrizations.weight.original0"),
              self.take(f"{prefix}.parametrizations.weight.original1"))
    return self.take(f"{prefix}.weight_g"), self.take(f"{prefix}.weight_v")

  def check_all_used(self) -> None:
    unused = sorted(set(self.tensors) - self.used)
    if unused:
      raise ValueError(f"{self.what} checkpoint tensors not used by this config ({len(unused)}): {unused[:8]}")


def check_shapes(expected: Any, got: Any, what: str = "checkpoint") -> None:
  """Every leaf of `expected` (arrays or ShapeDtypeStructs) is in `got` with its shape, and nothing else is."""
  flat_expected = dict(jax.tree_util.tree_flatten_with_path(expected)[0])
  flat_got = dict(jax.tree_util.tree_flatten_with_path(got)[0])
  problems = [f"{jax.tree_util.keystr(k)} missing" for k in flat_expected if k not in flat_got]
  problems += [f"{jax.tree_util.keystr(k)} unexpected" for k in flat_got if k not in flat_expected]
  problems += [f"{jax.tree_util.keystr(k)}: {np.shape(flat_got[k])} != {tuple(v.shape)}"
               for k, v in flat_expected.items() if k in flat_got and np.shape(flat_got[k]) != tuple(v.shape)]
  if problems:
    raise ValueError(f"converted {what} weights do not fit the config: " + "; ".join(problems[:8]))


# safetensors dtype names -> numpy dtypes
_DTYPES = {"F64": np.dtype(np.float64), "F32": np.dtype(np.float32), "F16": np.dtype(np.float16),
           "BF16": np.dtype(ml_dtypes.bfloat16), "I64": np.dtype(np.int64), "I32": np.dtype(np.int32),
           "I16": np.dtype(np.int16), "I8": np.dtype(np.int8), "U8": np.dtype(np.uint8), "BOOL": np.dtype(np.bool_)}


@dataclasses.dataclass(frozen=True)
class _Entry:
  file: str
  dtype: np.dtype
  shape: tuple[int, ...]
  start: int  # absolute byte offset of the tensor's data in `file`


class SafetensorsReader:
  """Tensors of a save_pretrained directory (local or gs://) by name, read lazily: whole tensors or row ranges,
  each one ranged read of exactly its bytes (`storage.read_range`). Nothing is memory-mapped, so a process holds
  only what it asked for; `rows_read` counts what each tensor cost."""

  def __init__(self, directory: str):
    files = _safetensors_files(directory)
    if not files:
      raise FileNotFoundError(f"no *.safetensors in {directory} (convert pytorch_model.bin checkpoints to safetensors)")
    self.entries: dict[str, _Entry] = {}
    for f in files:
      self.entries.update(_read_header(f))
    self.where = {name: entry.file for name, entry in self.entries.items()}
    self.rows_read: dict[str, int] = collections.Counter()  # name -> rows (of axis 0) read so far

  def shape(self, name: str) -> tuple[int, ...]:
    return self._entry(name).shape

  def get(self, name: str, rows: slice = slice(None)) -> np.ndarray:
    """The tensor (or its rows `rows`, a slice with step 1) as float32; counted in `rows_read`."""
    entry = self._entry(name)
    if not entry.shape:
      data = storage.read_range(entry.file, entry.start, entry.dtype.itemsize)
      self.rows_read[name] += 1
      return np.frombuffer(data, entry.dtype).astype(np.float32).reshape(())
    first, stop, step = rows.indices(entry.shape[0])
    if step != 1:
      raise ValueError(f"rows of {name} must be a contiguous slice, got {rows}")
    count = max(stop - first, 0)
    row_bytes = int(np.prod(entry.shape[1:], dtype=np.int64)) * entry.dtype.itemsize
    data = storage.read_range(entry.file, entry.start + first * row_bytes, count * row_bytes)
    if len(data) != count * row_bytes:
      raise ValueError(f"{entry.file} is truncated: {name} needs {count * row_bytes} bytes, read {len(data)}")
    self.rows_read[name] += count
    return np.frombuffer(data, entry.dtype).reshape(count, *entry.shape[1:]).astype(np.float32)

  def reads(self, name: str) -> float:
    """How many times the tensor was read in full so far (rows read / rows)."""
    shape = self.shape(name)
    return self.rows_read[name] / (shape[0] if shape else 1)

  def _entry(self, name: str) -> _Entry:
    if name not in self.entries:
      raise KeyError(f"the checkpoint has no tensor {name!r}")
    return self.entries[name]


def _read_header(path: str) -> dict[str, _Entry]:
  """The tensors of one safetensors file: an 8-byte little-endian header length, the JSON header (name -> dtype,
  shape, data_offsets relative to the end of the header), then the data."""
  (length,) = struct.unpack("<Q", storage.read_range(path, 0, 8))
  header = json.loads(storage.read_range(path, 8, length))
  entries = {}
  for name, info in header.items():
    if name == "__metadata__":
      continue
    if info["dtype"] not in _DTYPES:
      raise ValueError(f"{path}: tensor {name} has dtype {info['dtype']}, supported: {sorted(_DTYPES)}")
    begin, end = info["data_offsets"]
    entry = _Entry(path, _DTYPES[info["dtype"]], tuple(info["shape"]), 8 + length + begin)
    if end - begin != int(np.prod(entry.shape, dtype=np.int64)) * entry.dtype.itemsize:
      raise ValueError(f"{path}: tensor {name}'s data_offsets do not fit its shape {entry.shape}")
    entries[name] = entry
  return entries
