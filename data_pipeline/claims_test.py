"""Claims on local disk and on a GCS emulator: one winner per unit, leases that renew, expire and are taken over
exactly once, a dead owner on this host detected, and the bounded wait."""

import concurrent.futures
import json
import socket
import subprocess
import sys
import time

import pytest

from audiopalm.files import storage
from data_pipeline.claims import Claims, LeaseConfig, worker_id


@pytest.fixture(params=["local", "gcs"])
def directory(request, tmp_path) -> str:
  root = str(tmp_path) if request.param == "local" else request.getfixturevalue("gcs_bucket")
  return storage.join(root, "claims")


class Clock:
  def __init__(self):
    self.now = 1000.0

  def __call__(self) -> float:
    return self.now


CONFIG = LeaseConfig(lease_seconds=10, renew_seconds=1, poll_seconds=0.01, wait_seconds=20)


def test_one_winner_among_racing_processes(directory):
  racers = [Claims(directory, CONFIG, owner=f"racer-{i}") for i in range(6)]
  with concurrent.futures.ThreadPoolExecutor(6) as pool:
    leases = list(pool.map(lambda c: c.try_claim("shard-00003-of-00008"), racers))
  winners = [lease for lease in leases if lease is not None]
  assert len(winners) == 1 and winners[0].generation == 0
  [state] = racers[0].scan().values()
  assert state.owner == winners[0].claims.owner and not state.expired(racers[0].clock())


def test_expired_claims_are_taken_over_once_and_the_loser_knows(directory, monkeypatch):
  monkeypatch.setenv("AUDIOPALM_CLAIMS_TIME_ONLY", "1")
  clock = Clock()
  a = Claims(directory, CONFIG, owner="a", clock=clock)
  b = Claims(directory, CONFIG, owner="b", clock=clock)
  c = Claims(directory, CONFIG, owner="c", clock=clock)
  held = a.try_claim("unit")
  clock.now += 9
  assert b.try_claim("unit") is None  # live
  assert held.renew()
  clock.now += 9
  assert b.try_claim("unit") is None  # renewed 9 s ago: still live
  clock.now += 11  # a stopped renewing (died or stalled)
  state = b.scan()["unit"]
  taken = b.try_claim("unit", state, scanned=True)
  assert taken is not None and taken.generation == 1
  assert c.try_claim("unit", state, scanned=True) is None  # the same expired claim is taken over only once
  assert held.lost() and not held.renew()
  assert json.loads(storage.read_bytes(held.path))["owner"] == "a"  # a's stale renewal wrote nothing
  taken.release()
  released = b.scan()["unit"]
  assert released.generation == 1 and released.expired(clock())  # released: free at once, its number kept
  assert held.lost() and not held.renew()  # a taken-over owner stays lost after the release
  again = c.try_claim("unit")
  assert again is not None and again.generation == 2  # generation numbers are never reused
  c.clear()
  assert storage.listdir(directory) == []


def test_a_dead_owner_on_this_host_is_expired_at_once(directory):
  gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                        check=True)
  namespace = worker_id().split(":")[2]
  owner = f"{socket.gethostname()}:{gone.stdout.strip()}:{namespace}:deadbeef"
  Claims(directory, CONFIG, owner=owner).try_claim("unit")
  assert Claims(directory, CONFIG).try_claim("unit") is not None
  alive = f"{socket.gethostname()}:1:{namespace}:cafe"  # pid 1 exists
  Claims(directory, CONFIG, owner=alive).try_claim("other")
  Claims(directory, CONFIG, owner="elsewhere:12345:1:beef").try_claim("third")  # other hosts expire by time
  other_namespace = f"{socket.gethostname()}:{gone.stdout.strip()}:{int(namespace) + 1}:feed"  # a container's
  Claims(directory, CONFIG, owner=other_namespace).try_claim("fourth")
  fresh = Claims(directory, CONFIG)
  assert fresh.try_claim("other") is None and fresh.try_claim("third") is None and fresh.try_claim("fourth") is None


def test_renewing_thread_keeps_the_claim(directory):
  config = LeaseConfig(lease_seconds=0.6, renew_seconds=0.1, poll_seconds=0.01, wait_seconds=2)
  a = Claims(directory, config, owner="a")
  lease = a.try_claim("unit")
  with lease.renewing():
    time.sleep(1.2)  # twice the lease: alive only because it was renewed
    assert Claims(directory, config, owner="b").try_claim("unit") is None


def test_config_is_checked():
  with pytest.raises(ValueError, match="renew_seconds"):
    LeaseConfig(lease_seconds=10, renew_seconds=10)
  with pytest.raises(ValueError, match="wait_seconds"):
    LeaseConfig(lease_seconds=100, renew_seconds=10, wait_seconds=50)
