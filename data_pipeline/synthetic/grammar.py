"""The demo command grammar: seeded sentences over a small vocabulary, with held-out colour-object pairs.

    held_out = held_out_pairs(seed=0)                  # 16 (colour, object) pairs only the test split says
    sample_sentence(rng, "train", held_out)           # "move two green boxes up": never a held-out pair
    sample_sentence(rng, "test", held_out)            # at least one held-out pair
    says_held_out_pair("put the red hat up", held_out)  # True when the sentence says a held-out pair

Sentences ("move two green boxes up", "put the red ball on the left", "turn left three times") come from nine
templates over a vocabulary of 63 words (`vocabulary()`). `held_out_pairs(seed)` picks two objects per colour;
a train sentence never contains one of those pairs (singular or plural), a test sentence always does. So every
held-out sentence is one no training sentence can be: the bundled corpus (`tools.make_demo_corpus`), the text
(`tools.make_demo_text`) and the generated training speech (`data_pipeline.synthesize_speech`) share the rule.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

_HELD_OUT_CODE = 99  # seed-sequence key of the held-out colour-object pairs
HELD_OUT_PER_COLOUR = 2

# Vocabulary.
VERBS = ("put", "move", "push", "pull", "drop", "take", "lift", "grab")
NUMBERS = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
COLOURS = ("red", "green", "blue", "yellow", "black", "white", "pink", "brown")
OBJECTS = ("ball", "box", "cup", "block", "star", "ring", "hat", "car")
PLURALS = {"ball": "balls", "box": "boxes", "cup": "cups", "block": "blocks", "star": "stars",
           "ring": "rings", "hat": "hats", "car": "cars"}
SIZES = ("big", "small")
DIRECTIONS = ("up", "down", "left", "right", "forward", "back")
SIDES = ("left", "right")
PREPOSITIONS = ("on", "under", "near", "behind")


def vocabulary() -> list[str]:
  """Every word the grammar can produce, sorted."""
  words = {"the", "a", "and", "please", "now", "turn", "go", "times", "steps"}
  for group in (VERBS, NUMBERS, COLOURS, OBJECTS, tuple(PLURALS.values()), SIZES, DIRECTIONS, SIDES,
                PREPOSITIONS):
    words.update(group)
  return sorted(words)


def held_out_pairs(seed: int) -> frozenset[tuple[str, str]]:
  """Colour-object pairs that only occur in `test`: each colour and each object in a few of them."""
  rng = np.random.default_rng([seed, _HELD_OUT_CODE])
  perm = rng.permutation(len(OBJECTS))
  return frozenset((colour, OBJECTS[perm[(i + k) % len(OBJECTS)]])
                   for i, colour in enumerate(COLOURS) for k in range(HELD_OUT_PER_COLOUR))


# A template draws words from `rng` and returns them with the colour-object pairs it used.
Sentence = tuple[list[str], list[tuple[str, str]]]


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
  return options[int(rng.integers(len(options)))]


def _counted(rng: np.random.Generator, colour: str, obj: str) -> list[str]:
  number = _pick(rng, NUMBERS)
  return [number, colour, obj if number == "one" else PLURALS[obj]]


def _verb_object_direction(rng: np.random.Generator) -> Sentence:  # move the red ball up
  colour, obj = _pick(rng, COLOURS), _pick(rng, OBJECTS)
  return [_pick(rng, VERBS), "the", colour, obj, _pick(rng, DIRECTIONS)], [(colour, obj)]


def _verb_count_direction(rng: np.random.Generator) -> Sentence:  # move two green boxes up
  colour, obj = _pick(rng, COLOURS), _pick(rng, OBJECTS)
  return [_pick(rng, VERBS), *_counted(rng, colour, obj), _pick(rng, DIRECTIONS)], [(colour, obj)]


def _put_on_side(rng: np.random.Generator) -> Sentence:  # put the red ball on the left
  colour, obj = _pick(rng, COLOURS), _pick(rng, OBJECTS)
  return ["put", "the", colour, obj, "on", "the", _pick(rng, SIDES)], [(colour, obj)]


def _put_relative(rng: np.random.Generator) -> Sentence:  # put the red ball under the blue box
  colour, obj = _pick(rng, COLOURS), _pick(rng, OBJECTS)
  colour2, obj2 = _pick(rng, COLOURS), _pick(rng, OBJECTS)
  words = [_pick(rng, VERBS), "the", colour, obj, _pick(rng, PREPOSITIONS), "the", colour2, obj2]
  return words, [(colour, obj), (colour2, obj2)]


def _verb_sized(rng: np.random.Generator) -> Sentence:  # take the big red cup
  colour, obj = _pick(rng, COLOURS), _pick(rng, OBJECTS)
  return [_pick(rng, VERBS), "the", _pick(rng, SIZES), colour, obj], [(colour, obj)]


def _verb_two(rng: np.random.Generator) -> Sentence:  # drop a red ball and a blue cup
  colour, obj = _pick(rng, COLOURS), _pick(rng, OBJECTS)
  colour2, obj2 = _pick(rng, COLOURS), _pick(rng, OBJECTS)
  return [_pick(rng, VERBS), "a", colour, obj, "and", "a", colour2, obj2], [(colour, obj), (colour2, obj2)]


def _count_and_count(rng: np.random.Generator) -> Sentence:  # take two red cups and one blue box
  colour, obj = _pick(rng, COLOURS), _pick(rng, OBJECTS)
  colour2, obj2 = _pick(rng, COLOURS), _pick(rng, OBJECTS)
  words = ["take", *_counted(rng, colour, obj), "and", *_counted(rng, colour2, obj2)]
  return words, [(colour, obj), (colour2, obj2)]


def _turn(rng: np.random.Generator) -> Sentence:  # turn left three times
  return ["turn", _pick(rng, SIDES), _pick(rng, NUMBERS[1:]), "times"], []


def _go(rng: np.random.Generator) -> Sentence:  # go forward four steps
  return ["go", _pick(rng, DIRECTIONS), _pick(rng, NUMBERS[1:]), "steps"], []


# (template, weight). Test sentences use only templates with a colour-object pair.
TEMPLATES: tuple[tuple[Callable[[np.random.Generator], Sentence], float], ...] = (
    (_verb_object_direction, 2.5),
    (_verb_count_direction, 3.5),
    (_put_on_side, 1.5),
    (_put_relative, 2.0),
    (_verb_sized, 1.5),
    (_verb_two, 1.0),
    (_count_and_count, 0.75),
    (_turn, 1.0),
    (_go, 1.0),
)
_PAIR_FREE_TEMPLATES = (_turn, _go)


def sample_sentence(rng: np.random.Generator, split: str, held_out: frozenset[tuple[str, str]]) -> str:
  """A sentence for `split`: train avoids every held-out pair, test contains at least one."""
  templates = [(t, w) for t, w in TEMPLATES if split == "train" or t not in _PAIR_FREE_TEMPLATES]
  weights = np.array([w for _, w in templates])
  weights /= weights.sum()
  while True:
    template = templates[int(rng.choice(len(templates), p=weights))][0]
    words, pairs = template(rng)
    uses_held_out = any(pair in held_out for pair in pairs)
    if uses_held_out == (split == "test"):
      break
  u = rng.random()
  if u < 0.08:
    words = ["please", *words]
  elif u < 0.14:
    words = [*words, "now"]
  return " ".join(words)


def says_held_out_pair(text: str, held_out: frozenset[tuple[str, str]]) -> bool:
  """Whether a sentence (any case) says a held-out colour-object pair, singular or plural."""
  words = text.lower().split()
  pairs = set(held_out) | {(colour, PLURALS[obj]) for colour, obj in held_out}
  return any(pair in pairs for pair in zip(words, words[1:]))
