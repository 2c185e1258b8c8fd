"""Multi-host initialisation: `jax.distributed.initialize` from flags or the environment."""

from __future__ import annotations

import dataclasses
import logging
import os

import jax

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class DistributedConfig:
  """How this process joins a multi-process run.

  Leave everything None on a single host. On Cloud TPU set `auto=True` (JAX reads
  the topology from the environment). On GPU clusters and CPU give the
  coordinator address, process count and this process's id (or the
  `AUDIOPALM_COORDINATOR_ADDRESS`, `AUDIOPALM_NUM_PROCESSES`, `AUDIOPALM_PROCESS_ID`
  environment variables; SLURM's are detected by JAX itself with `auto=True`).

  `heartbeat_timeout_s` (or `AUDIOPALM_HEARTBEAT_TIMEOUT_S`) bounds how long the others wait for a process that
  died (SIGKILL, a lost host): after it, JAX's coordination service ends every process with "another task died"
  (a non-zero exit), and a restart resumes from the newest checkpoint. None: JAX's default (100 s).
  """

  coordinator_address: str | None = None
  num_processes: int | None = None
  process_id: int | None = None
  auto: bool = False
  cpu_collectives: str = "gloo"
  heartbeat_timeout_s: int | None = None

  @classmethod
  def from_env(cls, **overrides) -> "DistributedConfig":
    env = os.environ
    values = dict(
        coordinator_address=env.get("AUDIOPALM_COORDINATOR_ADDRESS"),
        num_processes=int(env["AUDIOPALM_NUM_PROCESSES"]) if "AUDIOPALM_NUM_PROCESSES" in env else None,
        process_id=int(env["AUDIOPALM_PROCESS_ID"]) if "AUDIOPALM_PROCESS_ID" in env else None,
        auto=env.get("AUDIOPALM_DISTRIBUTED_AUTO", "0") == "1",
        heartbeat_timeout_s=(int(env["AUDIOPALM_HEARTBEAT_TIMEOUT_S"]) if "AUDIOPALM_HEARTBEAT_TIMEOUT_S" in env
                             else None),
    )
    values.update({k: v for k, v in overrides.items() if v is not None})
    return cls(**values)

  @property
  def explicit(self) -> bool:
    return self.coordinator_address is not None

  def validate(self) -> None:
    given = [self.coordinator_address is not None, self.num_processes is not None, self.process_id is not None]
    if any(given) and not all(given):
      raise ValueError("Multi-process runs need all of --coordinator_address, --num_processes and "
                       f"--process_id; got coordinator_address={self.coordinator_address!r}, "
                       f"num_processes={self.num_processes!r}, process_id={self.process_id!r}")
    if all(given) and not 0 <= self.process_id < self.num_processes:
      raise ValueError(f"process_id {self.process_id} is outside [0, {self.num_processes})")
    if self.heartbeat_timeout_s is not None and self.heartbeat_timeout_s < 1:
      raise ValueError(f"heartbeat_timeout_s must be >= 1 second, got {self.heartbeat_timeout_s}")


def initialize(cfg: DistributedConfig) -> None:
  """Joins the multi-process run described by `cfg`; a no-op for a single process."""
  cfg.validate()
  timeouts = {} if cfg.heartbeat_timeout_s is None else {"heartbeat_timeout_seconds": cfg.heartbeat_timeout_s}
  if cfg.explicit:
    if jax.config.jax_platforms in (None, "", "cpu") or os.environ.get("JAX_PLATFORMS", "") == "cpu":
      jax.config.update("jax_cpu_collectives_implementation", cfg.cpu_collectives)
    log.info("jax.distributed.initialize(%s, num_processes=%d, process_id=%d)", cfg.coordinator_address,
             cfg.num_processes, cfg.process_id)
    jax.distributed.initialize(coordinator_address=cfg.coordinator_address, num_processes=cfg.num_processes,
                               process_id=cfg.process_id, **timeouts)
  elif cfg.auto:
    jax.distributed.initialize(**timeouts)
