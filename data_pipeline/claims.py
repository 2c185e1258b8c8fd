"""Elastic work: units of work (the plan, each shard, the finish) are claimed on the store, not assigned.

    claims = Claims("gs://b/tokens/claims", LeaseConfig(lease_seconds=600))
    lease = claims.try_claim("shard-00042")     # None: someone holds it (a live lease)
    if lease is not None:
      with lease.renewing():                    # a thread renews it every renew_seconds
        ... do the work, commit it exactly once (the commit itself is exclusive) ...
      lease.release()

A claim is a small JSON object `<dir>/<key>.<generation>` created with an atomic create-if-absent
(`audiopalm.files.storage.create_exclusive`: GCS `ifGenerationMatch=0`, local `O_EXCL`/link), so of several
processes racing for a unit exactly one wins. It holds its owner and an expiry time; the owner rewrites it before
then (renewal). A claim whose expiry has passed belonged to a process that died (or stalled): anyone may take the
unit over by creating the next generation, `<key>.<generation + 1>`, again exclusively, so two processes never
take over the same dead claim. An owner that finds a newer generation of its claim has lost it and stops
(`Lease.lost`); the work's commit is exclusive anyway, so even a stalled owner that wakes up late cannot commit a
unit twice.

No process is special and nobody needs to know how many there are: any number, started at any time, by any
launcher, share the work; a late one claims what is left, a dead one's units come back after `lease_seconds`.
A claim of a process of this same host that no longer exists is expired at once (so a run restarted on the
machine where it crashed goes on without waiting). Expiry times are the owners' clocks (hosts synchronised by NTP are within milliseconds; keep `lease_seconds` far
above any clock skew).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import socket
import threading
import time
import uuid
from typing import Callable, Iterator

from audiopalm.files import storage

log = logging.getLogger(__name__)

_NAME = re.compile(r"(?P<key>[\w.-]+)\.(?P<generation>\d+)")
# Set (to anything) to ignore owners' liveness on this host: claims then expire only by time (tests use it to
# exercise expiry with every process on one machine).
_NO_LIVENESS_ENV = "AUDIOPALM_CLAIMS_TIME_ONLY"


@dataclasses.dataclass(frozen=True)
class LeaseConfig:
  """How long claims live and how long a process waits for others.

  Attributes:
    lease_seconds: a claim not renewed for this long is taken over by another process.
    renew_seconds: how often an owner renews its claims (well below lease_seconds).
    poll_seconds: how often a process with nothing to claim looks again (units held by others).
    wait_seconds: a process with nothing left to claim waits for the units others hold; when no unit finishes
      and no claim changes hands for this long, it gives up with a message naming the units and their owners
      (rerun it to go on). Must exceed lease_seconds and the time one unit takes (the planning of a large
      corpus, a shard).
  """

  lease_seconds: float = 600.0
  renew_seconds: float = 60.0
  poll_seconds: float = 10.0
  wait_seconds: float = 6 * 3600.0

  def __post_init__(self):
    if not 0 < self.renew_seconds < self.lease_seconds:
      raise ValueError(f"LeaseConfig: need 0 < renew_seconds ({self.renew_seconds}) < lease_seconds "
                       f"({self.lease_seconds})")
    if not self.poll_seconds > 0:
      raise ValueError(f"LeaseConfig.poll_seconds must be positive, got {self.poll_seconds}")
    if not self.wait_seconds > self.lease_seconds:
      raise ValueError(f"LeaseConfig.wait_seconds ({self.wait_seconds}) must exceed lease_seconds "
                       f"({self.lease_seconds}): a dead owner's claim must be able to expire while others wait")


def _pid_namespace() -> int:
  """This process's PID namespace (its inode; 0 where unknown): pids are comparable only within one."""
  try:
    return os.stat("/proc/self/ns/pid").st_ino
  except OSError:
    return 0


def _dead_here(owner: str | None) -> bool:
  """Whether `owner` (a `worker_id`) names a process of this host and PID namespace that is gone.

  Containers may share a host name but not their pids (host networking): owners of another PID namespace, or
  with no namespace recorded, are never judged here (their claims expire by time)."""
  if not owner or os.environ.get(_NO_LIVENESS_ENV):
    return False
  parts = owner.split(":")
  if len(parts) != 4 or parts[0] != socket.gethostname() or not parts[1].isdigit():
    return False
  namespace = _pid_namespace()
  if not namespace or parts[2] != str(namespace) or int(parts[1]) == os.getpid():
    return False
  try:
    os.kill(int(parts[1]), 0)
  except ProcessLookupError:
    return True
  except PermissionError:  # alive, another user's
    return False
  return False


def worker_id() -> str:
  """This process's name in claims: host, pid, PID namespace and a random suffix (pids repeat across hosts,
  containers and restarts)."""
  return f"{socket.gethostname()}:{os.getpid()}:{_pid_namespace()}:{uuid.uuid4().hex[:8]}"


@dataclasses.dataclass(frozen=True)
class ClaimState:
  """The newest claim of one unit, as found on the store."""

  key: str
  generation: int
  path: str
  owner: str | None
  expires: float | None  # None: unreadable (treated as expired)

  def expired(self, now: float) -> bool:
    """Whether the unit may be taken over: the claim's time is up, or its owner is a process of this host that
    no longer exists (a crashed run, restarted on the same machine, need not wait for its own claims)."""
    return self.expires is None or now >= self.expires or _dead_here(self.owner)


class Lease:
  """A unit this process holds (see the module docstring)."""

  def __init__(self, claims: "Claims", key: str, generation: int):
    self.claims, self.key, self.generation = claims, key, generation
    self.path = claims.path(key, generation)
    self._lost = threading.Event()

  def _body(self) -> bytes:
    return json.dumps({"owner": self.claims.owner, "generation": self.generation,
                       "expires": self.claims.clock() + self.claims.config.lease_seconds}).encode()

  def lost(self) -> bool:
    """Whether another process took the unit over (a newer generation of the claim exists)."""
    if not self._lost.is_set() and storage.is_file(self.claims.path(self.key, self.generation + 1)):
      self._lost.set()
    return self._lost.is_set()

  def renew(self) -> bool:
    """Pushes the expiry forward; False (and nothing written) if the claim was lost."""
    if self.lost():
      return False
    storage.write_bytes(self.path, self._body())
    return True

  @contextlib.contextmanager
  def renewing(self) -> Iterator["Lease"]:
    """Renews the lease every `renew_seconds` on a thread while the block runs."""
    stop = threading.Event()

    def loop() -> None:
      while not stop.wait(self.claims.config.renew_seconds):
        try:
          if not self.renew():
            log.warning("claim %s was taken over by another process: this one's work on it will not commit",
                        self.key)
            return
        except Exception as e:  # pylint: disable=broad-except  # a failed renewal is retried; expiry decides
          log.warning("could not renew the claim %s: %s", self.key, e)

    thread = threading.Thread(target=loop, name=f"lease-{self.key}", daemon=True)
    thread.start()
    try:
      yield self
    finally:
      stop.set()
      thread.join()

  def release(self) -> None:
    """Gives the unit up: the claim is rewritten as expired (after the unit is committed, completion being recorded
    by the unit's own output; or after a failure here, so that another process may take the unit at once). Claim
    files are never deleted while the job runs, so a generation number is never reused and `lost` stays true for
    an owner that was taken over; `Claims.clear` deletes them once every unit is done."""
    if not self.lost():
      storage.write_bytes(self.path, json.dumps({"owner": self.claims.owner, "generation": self.generation,
                                                 "expires": 0.0, "released": True}).encode())


class Claims:
  """The claims of one job, in one directory."""

  def __init__(self, directory: str, config: LeaseConfig = LeaseConfig(), owner: str | None = None,
               clock: Callable[[], float] = time.time):
    self.directory, self.config = directory, config
    self.owner = owner or worker_id()
    self.clock = clock

  def clear(self) -> None:
    """Deletes every claim file (when the whole job is done)."""
    for name in storage.listdir(self.directory):
      storage.remove(storage.join(self.directory, name))

  def path(self, key: str, generation: int) -> str:
    return storage.join(self.directory, f"{key}.{generation}")

  def scan(self, keys: set[str] | None = None) -> dict[str, ClaimState]:
    """The newest claim of every claimed unit (of `keys`, if given): one listing, one read per unit's claim."""
    newest: dict[str, int] = {}
    for name in storage.listdir(self.directory):
      m = _NAME.fullmatch(name)
      if m and (keys is None or m["key"] in keys):
        newest[m["key"]] = max(newest.get(m["key"], -1), int(m["generation"]))
    return {key: self._state(key, generation) for key, generation in newest.items()}

  def _state(self, key: str, generation: int) -> ClaimState:
    path = self.path(key, generation)
    try:
      data = json.loads(storage.read_bytes(path))
      return ClaimState(key, generation, path, str(data.get("owner")), float(data["expires"]))
    except FileNotFoundError:  # released meanwhile
      return ClaimState(key, generation, path, None, None)
    except (ValueError, KeyError, TypeError):  # a partial write cannot happen; a foreign file can
      return ClaimState(key, generation, path, None, None)

  def try_claim(self, key: str, state: ClaimState | None = None, *, scanned: bool = False) -> Lease | None:
    """The unit's lease if this process gets it: it is unclaimed, or its claim has expired (taken over).

    `state`: the unit's newest claim from a `scan` (with `scanned=True`: None means unclaimed then)."""
    if not scanned:
      state = self.scan({key}).get(key)
    if state is not None and not state.expired(self.clock()):
      return None
    generation = 0 if state is None else state.generation + 1
    lease = Lease(self, key, generation)
    if not storage.create_exclusive(lease.path, lease._body()):  # pylint: disable=protected-access
      return None  # another process was faster
    if state is not None:
      log.warning("took over %s from %s (its claim expired)", key, state.owner or "an unknown owner")
    return lease


__all__ = ["ClaimState", "Claims", "Lease", "LeaseConfig", "worker_id"]
