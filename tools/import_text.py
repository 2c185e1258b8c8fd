r"""A text corpus as a transcript-only token dataset, so a speech-text mixture can train on text its speech lacks.

    python -m tools.import_text --text=audiopalm/data/assets/demo_text.txt --like=runs/tokens_demo \
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
formats need audio tokens. Every run writes every shard of its split afresh (text is cheap to write; a rerun
after a change of text, language or `--like` must not keep old examples), each through a temporary file renamed
when complete, as `data_pipeline.tokenize` writes them; then it removes the split's shards of another count and
writes metadata.json, stats.json and the TFDS files, keeping other splits an earlier import wrote. It refuses an
`--output_dir` holding a dataset it did not write (a tokenized speech dataset, say).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from typing import Sequence

import numpy as np
import tensorflow as tf
from etils import epath

from audiopalm.cli.inference_flags import UsageError
from audiopalm.files.atomic import write_text_atomic
from data_pipeline import dataset_info, shards

DEFAULT_PARAGRAPHS_PER_SHARD = 100_000
MARKER = "import_text.json"  # written first into every output directory: this tool's, rewritable
_PARAGRAPH_BREAK = re.compile(r"\n[^\S\n]*\n")  # a line that is empty or only whitespace


def paragraphs(paths: Sequence[str]) -> list[tuple[str, int, str]]:
  """(path, index in its file, text) of every non-empty paragraph, whitespace collapsed, in file order."""
  stems = [_stem(path) for path in paths]
  if len(set(stems)) != len(stems):
    raise UsageError(f"--text: file names repeat ({stems}): example ids are <file stem>-<paragraph>; rename one")
  out = []
  for path in paths:
    p = epath.Path(path)
    if not p.is_file():
      raise UsageError(f"--text: {path} is not a file")
    try:
      text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
      raise UsageError(f"--text: {path} is not UTF-8 text ({e})") from e
    chunks = [" ".join(chunk.split()) for chunk in _PARAGRAPH_BREAK.split(text)]
    out += [(path, i, chunk) for i, chunk in enumerate(c for c in chunks if c)]
  if not out:
    raise UsageError(f"--text: no text in {list(paths)}")
  return out


def _stem(path: str) -> str:
  return os.path.splitext(os.path.basename(path))[0]


def text_segment(path: str, index: int, text: str, language: str | None, num_codebooks: int
                 ) -> shards.TokenizedSegment:
  """Paragraph `index` of `path` as an example: the transcript, no semantic or acoustic tokens."""
  stem = _stem(path)
  return shards.TokenizedSegment(
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
  if not (epath.Path(like) / dataset_info.METADATA_FILE).exists():
    raise UsageError(f"--like: no token dataset at {like} (no {dataset_info.METADATA_FILE}); make one with "
                     "data_pipeline.tokenize first")
  if os.path.abspath(like) == os.path.abspath(output_dir):
    raise UsageError("--output_dir must not be the --like dataset")
  info = dataset_info.read_metadata(like).tokens
  items = paragraphs(paths)
  others = _other_splits(output_dir, split, info)
  num_shards = -(-len(items) // paragraphs_per_shard)
  stats = []
  for shard in range(num_shards):
    with shards.ShardWriter(output_dir, shard, num_shards, info, split=split, overwrite=True) as writer:
      for item in items[shard * paragraphs_per_shard:(shard + 1) * paragraphs_per_shard]:
        writer.write(text_segment(*item, language, info.acoustic.num_codebooks))
    stats.append(writer.stats)
  for f in shards.find_shards(output_dir):
    if f.split == split and f.num_shards != num_shards:  # an earlier import of other text
      tf.io.gfile.remove(f.path)
  return dataset_info.write_dataset_info(
      output_dir, tokens=info, shards=others + stats,
      description=f"text only (tools.import_text): paragraphs of {', '.join(paths)}; tokenizer names from {like}")


def _other_splits(output_dir: str, split: str, info: shards.TokensInfo) -> list[shards.ShardStats]:
  """Claims `output_dir` for this tool (its MARKER) and returns the shards of other splits an earlier import
  wrote there (kept in the metadata). Refuses a directory holding a dataset this tool did not write, or other
  splits with other tokenizer names."""
  out = epath.Path(output_dir)
  has_metadata = (out / dataset_info.METADATA_FILE).exists()
  if not (out / MARKER).exists():
    if has_metadata or shards.find_shards(output_dir):
      raise UsageError(f"--output_dir {output_dir} holds a token dataset that tools.import_text did not write: "
                       "give another directory")
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(str(out / MARKER), json.dumps({"written_by": "tools.import_text"}) + "\n")
  if not has_metadata:  # new, or an import that stopped before its metadata
    return []
  existing = dataset_info.read_metadata(output_dir)
  others = [s for s in existing.shards if s.split != split]
  if others and existing.tokens != info:
    raise UsageError(f"--output_dir {output_dir}: its splits {sorted({s.split for s in others})} carry other "
                     "tokenizer names than --like's; import them again or give another directory")
  return others


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m tools.import_text", description=__doc__.split("\n\n")[0],
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
