r"""A text corpus as a transcript-only token dataset, so a speech-text mixture can train on text its speech lacks.

    python -m audiopalm.main.import_text --text=audiopalm/data/assets/demo_text.txt --like=runs/tokens_demo \
        --output_dir=runs/text_demo
    # then, in a mixture: text_lm/MixtureComponent.dataset = 'runs/text_demo'   (or TEXT_DIR in audiopalm.gin)

Continued pretraining forgets what its text checkpoint knew unless text keeps coming. The AudioPaLM mixture's
`text_lm` task reads transcripts of a token dataset; by default those are the speech corpus's own transcripts,
which never say what the speech never says. This tool writes any text (the text checkpoint's own corpus, say) in
the token dataset format, one example per paragraph (separated by lines that are empty or only whitespace;
whitespace inside a paragraph is collapsed to single spaces), with the transcript and no audio tokens, so
`text_lm` can replay it. Example ids are `<file stem>-<paragraph index>`, so the files' names must differ.

The examples carry the tokenizer names of the `--like` token dataset (a mixture's datasets must agree on their
tokenizers; a text example uses neither). Only text formats (`text_lm`) make sequences of them: the audio
formats need audio tokens.

The text is streamed, a line at a time, so a corpus of any size fits in memory: a first pass counts the
paragraphs and checks every file (UTF-8, not empty) before anything is written, a second writes them. Every run
writes every shard of its split afresh (text is cheap to write; a rerun after a change of text, language or
`--like` must not keep old examples), each through a temporary file renamed when complete, as
`data_pipeline.tokenize` writes them. Before the first shard is rewritten, metadata.json is set aside (renamed
to import_text.replaced.json) and the TFDS files and stats.json derived from it are deleted, so an import that
stops part way never leaves a directory that reads as a complete dataset; run it again. At the end it removes
the split's shards of another count and writes metadata.json, stats.json and the TFDS files, keeping other splits
an earlier import wrote. It refuses an `--output_dir` holding a dataset it did not write (a tokenized speech
dataset, say).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
from typing import Iterator, Sequence

import numpy as np

from audiopalm.cli.inference_flags import UsageError
from audiopalm.files import storage
from audiopalm.tokens import dataset_info, schema, shards

DEFAULT_PARAGRAPHS_PER_SHARD = 100_000
MARKER = "import_text.json"  # written first into every output directory: this tool's, rewritable
REPLACED = "import_text.replaced.json"  # metadata.json, set aside while a split is rewritten (_set_aside_metadata)


def paragraphs(paths: Sequence[str]) -> Iterator[tuple[str, int, str]]:
  """(path, index in its file, text) of every non-empty paragraph, whitespace collapsed, in file order.

  Streams: a file is read a line at a time and only one paragraph is held, so a corpus of any size fits. A
  paragraph ends at a line (split at '\\n') that is empty or only whitespace."""
  stems = [_stem(path) for path in paths]
  if len(set(stems)) != len(stems):
    raise UsageError(f"--text: file names repeat ({stems}): example ids are <file stem>-<paragraph>; rename one")
  for path in paths:
    if not storage.is_file(path):
      raise UsageError(f"--text: {path} is not a file")
    index, words = 0, []
    with storage.open_sequential(path) as f:
      for number, raw in enumerate(itertools.chain(f, [b""]), 1):  # b"": the end of the file ends a paragraph
        try:
          line_words = raw.decode("utf-8").split()
        except UnicodeDecodeError as e:
          raise UsageError(f"--text: {path} is not UTF-8 text (line {number}: {e})") from e
        words += line_words
        if not line_words and words:
          yield path, index, " ".join(words)
          index, words = index + 1, []


def _stem(path: str) -> str:
  return os.path.splitext(os.path.basename(path))[0]


def text_segment(path: str, index: int, text: str, language: str | None, num_codebooks: int
                 ) -> schema.TokenizedSegment:
  """Paragraph `index` of `path` as an example: the transcript, no semantic or acoustic tokens."""
  stem = _stem(path)
  return schema.TokenizedSegment(
      id=f"{stem}-{index:07d}", utterance_id=f"{stem}-{index:07d}", segment_index=0, source=f"{path}#{index}",
      start=0.0, duration=0.0, transcript=text, language=language, speaker=None,
      semantic=np.zeros([0], np.int64),  # [T_s = 0]
      acoustic=np.zeros([0, num_codebooks], np.int64))  # [T_a = 0, Q]


def import_text(paths: Sequence[str], like: str, output_dir: str, *, language: str | None = "English",
                split: str = "train", paragraphs_per_shard: int = DEFAULT_PARAGRAPHS_PER_SHARD
                ) -> dataset_info.DatasetMetadata:
  """Writes the dataset (module docstring); returns its metadata."""
  if paragraphs_per_shard < 1:
    raise UsageError(f"--paragraphs_per_shard must be >= 1, got {paragraphs_per_shard}")
  if not storage.is_file(storage.join(like, dataset_info.METADATA_FILE)):
    raise UsageError(f"--like: no token dataset at {like} (no {dataset_info.METADATA_FILE}); make one with "
                     "data_pipeline.tokenize first")
  if (like if storage.is_remote(like) else os.path.abspath(like)).rstrip("/") == (
      output_dir if storage.is_remote(output_dir) else os.path.abspath(output_dir)).rstrip("/"):
    raise UsageError("--output_dir must not be the --like dataset")
  info = dataset_info.read_metadata(like).tokens
  count = sum(1 for _ in paragraphs(paths))  # a first pass: checks every file before anything is written
  if not count:
    raise UsageError(f"--text: no text in {list(paths)}")
  others = _other_splits(output_dir, split, info)
  _set_aside_metadata(output_dir)
  num_shards = -(-count // paragraphs_per_shard)
  items = paragraphs(paths)
  stats = []
  for shard in range(num_shards):
    with shards.ShardWriter(output_dir, shard, num_shards, info, split=split, overwrite=True) as writer:
      for item in itertools.islice(items, paragraphs_per_shard):
        writer.write(text_segment(*item, language, info.acoustic.num_codebooks))
    stats.append(writer.stats)
  if next(items, None) is not None or sum(s.examples for s in stats) != count:
    raise RuntimeError(f"--text changed while it was imported (first read {count} paragraphs): run again")
  for f in shards.find_shards(output_dir):
    if f.split == split and f.num_shards != num_shards:  # an earlier import of other text
      storage.remove(f.path)
  meta = dataset_info.write_dataset_info(
      output_dir, tokens=info, shards=others + stats,
      description=f"text only (audiopalm.main.import_text): paragraphs of {', '.join(paths)}; tokenizer names from {like}")
  storage.remove(storage.join(output_dir, REPLACED))
  return meta


def _other_splits(output_dir: str, split: str, info: schema.TokensInfo) -> list[shards.ShardStats]:
  """Claims `output_dir` for this tool (its MARKER) and returns the shards of other splits an earlier import
  wrote there (kept in the metadata: metadata.json, or REPLACED after an import that stopped part way). Refuses a
  directory holding a dataset this tool did not write, or other splits with other tokenizer names."""
  if not storage.is_file(storage.join(output_dir, MARKER)):
    if storage.is_file(storage.join(output_dir, dataset_info.METADATA_FILE)) or shards.find_shards(output_dir):
      raise UsageError(f"--output_dir {output_dir} holds a token dataset that audiopalm.main.import_text did not write: "
                       "give another directory")
    storage.write_text(storage.join(output_dir, MARKER), json.dumps({"written_by": "audiopalm.main.import_text"}) + "\n")
  found = [storage.join(output_dir, name) for name in (dataset_info.METADATA_FILE, REPLACED)
           if storage.is_file(storage.join(output_dir, name))]
  if not found:  # new, or an import that stopped before its first metadata
    return []
  existing = dataset_info.DatasetMetadata.from_json(json.loads(storage.read_text(found[0])), found[0])
  others = [s for s in existing.shards if s.split != split]
  if others and existing.tokens != info:
    raise UsageError(f"--output_dir {output_dir}: its splits {sorted({s.split for s in others})} carry other "
                     "tokenizer names than --like's; import them again or give another directory")
  return others


def _set_aside_metadata(output_dir: str) -> None:
  """Before any shard is rewritten, the files that describe the dataset go: the TFDS shard lengths and stats.json
  are deleted (write_dataset_info writes them again) and then metadata.json is renamed to REPLACED. An import that
  stops part way thus leaves no metadata.json, so no reader takes the directory for a complete dataset, and the
  next import still finds the other splits' statistics in REPLACED."""
  from tensorflow_datasets.core import constants  # pylint: disable=import-outside-toplevel

  for name in (constants.DATASET_INFO_FILENAME, dataset_info.STATS_FILE):
    storage.remove(storage.join(output_dir, name))
  if storage.is_file(storage.join(output_dir, dataset_info.METADATA_FILE)):
    storage.rename(storage.join(output_dir, dataset_info.METADATA_FILE), storage.join(output_dir, REPLACED))


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m audiopalm.main.import_text", description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--text", action="append", required=True, help="a UTF-8 text file (repeat for more)")
  parser.add_argument("--like", required=True, help="the token dataset whose tokenizer names the examples carry")
  parser.add_argument("--output_dir", required=True)
  parser.add_argument("--language", default="English", help="the examples' language ('' for none)")
  parser.add_argument("--split", default="train")
  parser.add_argument("--paragraphs_per_shard", type=int, default=DEFAULT_PARAGRAPHS_PER_SHARD)
  args = parser.parse_args(argv)
  try:
    meta = import_text(args.text, args.like, args.output_dir, language=args.language or None, split=args.split,
                       paragraphs_per_shard=args.paragraphs_per_shard)
  except UsageError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  totals = meta.totals
  print(f"wrote {totals.examples} text examples ({totals.transcribed} with transcripts) in "
        f"{len(meta.split_shards(args.split))} shards to {args.output_dir}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
