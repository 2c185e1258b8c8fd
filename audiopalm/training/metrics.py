"""Training metrics: MFU from model FLOPs and device peaks, TensorBoard + console output."""

from __future__ import annotations

import logging

import jax
import numpy as np

log = logging.getLogger(__name__)

# Dense bf16 peak FLOP/s per device (per chip for TPU), as published by the vendors.
PEAK_FLOPS_BY_DEVICE_KIND: dict[str, float] = {
    "TPU v4": 275e12,
    "TPU v5 lite": 197e12,  # v5e
    "TPU v5e": 197e12,
    "TPU v5": 459e12,  # v5p
    "TPU v5p": 459e12,
    "TPU v6 lite": 918e12,  # v6e (Trillium)
    "TPU v6e": 918e12,
    "TPU7x": 2307e12,
    "NVIDIA H100 80GB HBM3": 989e12,  # SXM
    "NVIDIA H100 PCIe": 756e12,
    "NVIDIA H100 NVL": 835e12,
    "NVIDIA H200": 989e12,
    "NVIDIA GH200 480GB": 989e12,
    "NVIDIA B200": 2250e12,
    "NVIDIA A100-SXM4-80GB": 312e12,
    "NVIDIA A100-SXM4-40GB": 312e12,
    "NVIDIA A100 80GB PCIe": 312e12,
    "NVIDIA L4": 121e12,
}


def peak_flops_per_device(device: jax.Device | None = None, override: float | None = None) -> float | None:
  """Peak FLOP/s of one device: `override` if given, else the table (None if unknown, e.g. CPU)."""
  if override:
    return float(override)
  device = device or jax.devices()[0]
  kind = device.device_kind
  if kind in PEAK_FLOPS_BY_DEVICE_KIND:
    return PEAK_FLOPS_BY_DEVICE_KIND[kind]
  for name, peak in PEAK_FLOPS_BY_DEVICE_KIND.items():  # e.g. "NVIDIA H100 80GB HBM3 (MIG)"
    if kind.startswith(name):
      return peak
  return None


def mfu(tokens_per_second: float, flops_per_token: float, num_devices: int, peak_per_device: float | None) -> float:
  """Model FLOPs utilisation in [0, 1]; NaN when the peak is unknown."""
  if not peak_per_device:
    return float("nan")
  return tokens_per_second * flops_per_token / (num_devices * peak_per_device)


class MetricsWriter:
  """Writes scalars to TensorBoard event files and a console line (process 0 only)."""

  def __init__(self, logdir: str | None):
    self._writer = None
    if logdir and jax.process_index() == 0:
      from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
      self._writer = SummaryWriter(logdir=logdir, flush_secs=10)

  def write(self, step: int, scalars: dict[str, float], tensorboard_only: dict[str, float] | None = None) -> None:
    """Writes `scalars` to TensorBoard and the console, `tensorboard_only` (e.g. per-layer detail) to TensorBoard."""
    if self._writer is not None:
      for name, value in {**scalars, **(tensorboard_only or {})}.items():
        self._writer.add_scalar(name, value, step)
    if jax.process_index() == 0 and scalars:
      shown = " ".join(f"{k}={_fmt(v)}" for k, v in scalars.items())
      log.info("step %d %s", step, shown)

  def close(self) -> None:
    if self._writer is not None:
      self._writer.close()


def _fmt(v: float) -> str:
  if isinstance(v, (int, np.integer)):
    return str(v)
  return f"{v:.4g}"
