"""The job's plan: the corpus's items (Utterance | Reject, in the reader's deterministic order), listed and parsed
once per job and shared through `<out>/manifest.jsonl`.

    items = plan("librilight", {"roots": ("gs://b/librilight/large",)}, "gs://b/tokens", claims)
    chunks = shard_items(items, 1000)      # the job's shards: consecutive items

One process plans, whatever the number of processes: the first to claim the unit "plan" (`data_pipeline.claims`)
runs the reader (listing the roots, parsing the metadata; readers read their many small files on a thread pool)
and writes the manifest atomically; every other process waits for the manifest and reads it (one request). A
planner that dies leaves its claim to expire, and a waiting process takes the planning over. Readers that list
through `data_pipeline.listing` can keep their listing in a cache (`listing_cache`), so a planning interrupted
after the listing does not list again.

The manifest's first line records the reader and its options; a process started with another input (another
reader, other roots or options) finds a manifest that is not its own and fails at once, naming both: all
processes of a job must plan the same corpus. A repeated id is rejected (`duplicate_id`, the first kept).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from typing import Any, Iterable, Iterator, Mapping, Sequence

from tqdm import tqdm

from audiopalm.files import storage
from data_pipeline.claims import Claims
from data_pipeline.readers import make_reader
from data_pipeline.records import DUPLICATE_ID, AudioRef, Reject, Utterance

log = logging.getLogger(__name__)

MANIFEST = "manifest.jsonl"
PLAN_KEY = "plan"


def _item_json(item: Utterance | Reject) -> dict[str, Any]:
  if isinstance(item, Reject):
    return {"reject": item.to_json()}
  return {"utterance": dataclasses.asdict(item)}


def _item_from_json(data: Mapping[str, Any]) -> Utterance | Reject:
  if "reject" in data:
    return Reject(**data["reject"])
  u = dict(data["utterance"])
  u["audio"] = AudioRef(**u["audio"])
  if u.get("voice_activity") is not None:
    u["voice_activity"] = tuple(tuple(r) for r in u["voice_activity"])
  return Utterance(**u)


def dedupe(items: Iterable[Utterance | Reject]) -> Iterator[Utterance | Reject]:
  """The items, with every Utterance whose id was seen before turned into a `duplicate_id` Reject."""
  seen: set[str] = set()
  for item in items:
    if isinstance(item, Utterance):
      if item.id in seen:
        item = Reject(item.id, str(item.audio), f"{DUPLICATE_ID}: an earlier utterance has this id")
      else:
        seen.add(item.id)
    yield item


def _header(reader_name: str, reader_options: Mapping[str, Any]) -> dict[str, Any]:
  return {"reader": reader_name, "options": json.loads(json.dumps(dict(reader_options), default=str))}


def _read_manifest(path: str, header: Mapping[str, Any]) -> list[Utterance | Reject] | None:
  """The manifest's items, None if there is none yet; ValueError if it was written for another input."""
  try:
    lines = storage.read_text(path).splitlines()
  except FileNotFoundError:
    return None
  if not lines or json.loads(lines[0]) != header:
    raise ValueError(f"{path} was written for another input ({lines[0] if lines else 'empty'}); this process reads "
                     f"{dict(header)}: every process of a job must be given the same input (and a new input needs "
                     "another output_dir, or the old one deleted)")
  log.info("Read the plan of %d items from %s", len(lines) - 1, path)
  return [_item_from_json(json.loads(line)) for line in lines[1:]]


def _list_and_parse(reader_name: str, reader_options: Mapping[str, Any]) -> list[Utterance | Reject]:
  reader = make_reader(reader_name, **reader_options)
  start = time.time()
  items = list(dedupe(tqdm(reader.utterances(), desc="planning", unit=" utt", mininterval=5, dynamic_ncols=True)))
  log.info("Listed and parsed %d items (%d rejected by the reader or as duplicates) in %.0f s", len(items),
           sum(isinstance(i, Reject) for i in items), time.time() - start)
  return items


def plan(reader_name: str, reader_options: Mapping[str, Any], output_dir: str,
         claims: Claims) -> list[Utterance | Reject]:
  """The job's items: the manifest, written by whichever process claims the planning (see the module docstring)."""
  path = storage.join(output_dir, MANIFEST)
  header = _header(reader_name, reader_options)
  waited_since, announced = time.monotonic(), False
  while True:
    items = _read_manifest(path, header)
    if items is not None:
      return items
    lease = claims.try_claim(PLAN_KEY)
    if lease is not None:
      try:
        with lease.renewing():
          if _read_manifest(path, header) is None:  # (else written just before the claim: nothing to do)
            items = _list_and_parse(reader_name, reader_options)
            text = "".join(json.dumps(x) + "\n" for x in [header] + [_item_json(i) for i in items])
            # Exclusive: if a planner thought dead wrote one meanwhile, that one is the plan, for everyone.
            storage.create_exclusive(path, text.encode("utf-8"))
      finally:
        lease.release()
      return _read_manifest(path, header)
    if not announced:
      log.info("Another process is planning the job (claim %s): waiting for %s", PLAN_KEY, path)
      announced = True
    if time.monotonic() - waited_since > claims.config.wait_seconds:
      raise TimeoutError(f"waited {claims.config.wait_seconds:.0f} s for {path}, which the process holding the claim "
                         f"{storage.join(claims.directory, PLAN_KEY)}.* is writing: is it stuck? Rerun to go on "
                         "(a dead planner's claim expires after LeaseConfig.lease_seconds)")
    time.sleep(claims.config.poll_seconds)


def shard_items(items: Sequence[Utterance | Reject], per_shard: int) -> list[Sequence[Utterance | Reject]]:
  """Consecutive chunks of `per_shard` items (at least one shard, possibly empty)."""
  return [items[i:i + per_shard] for i in range(0, len(items), per_shard)] or [items[:0]]


__all__ = ["MANIFEST", "PLAN_KEY", "dedupe", "plan", "shard_items"]
