"""RULER's synthetic tasks (NVIDIA/RULER, scripts/data/synthetic/): what one sample says, as text parts.

A sample is drawn from a seed fixed by (task, context, sample index), so the same prompts come back on
every run and machine. It is a ``Draft``: the user text before and after the context, the answer
prefix, the answers, and the context as *units* (a haystack line or sentence, a needle, a numbered
word) whose number ``n`` is chosen later, by token counts, to fill the context (``ruler.py``). Units
carry their separator (a trailing newline for line haystacks, a leading space for running text), so
that each one tokenizes alike wherever it stands and a prompt's ids are its units' ids laid end to end.

Templates, answer prefixes, needle wording, value types and the task settings are RULER's (its
``constants.py`` and ``synthetic.yaml``); the differences are listed in the README (RULER section).
"""

from __future__ import annotations

import hashlib
import math
import random
import string
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

NIAH = ("Some special magic {type_needle_v} are hidden within the following text. Make sure to memorize it. "
        "I will quiz you about the {type_needle_v} afterwards.\n{context}\nWhat are all the special magic "
        "{type_needle_v} for {query} mentioned in the provided text?")
NIAH_PREFIX = " The special magic {type_needle_v} for {query} mentioned in the provided text are"
NEEDLE = "One of the special magic {type_needle_v} for {key} is: {value}."
VT = ("Memorize and track the chain(s) of variable assignment hidden in the following text.\n\n{context}\n"
      "Question: Find all variables that are assigned the value {query} in the text above.")
VT_PREFIX = (" Answer: According to the chain(s) of variable assignment in the text above, {num_v} variables are "
             "assigned the value {query}, they are: ")
CWE = ("Below is a numbered list of words. In these words, some appear more often than others. Memorize the ones "
       "that appear most often.\n{context}\nQuestion: What are the 10 most common words in the above list?")
CWE_PREFIX = " Answer: The top 10 words that appear most often in the list are:"
FWE = ("Read the following coded text and track the frequency of each coded word. Find the three most frequently "
       "appeared coded words. {context}\nQuestion: Do not provide any explanation. Please ignore the dots '....'. "
       "What are the three most frequently appeared words in the above coded text?")
FWE_PREFIX = " Answer: According to the coded text above, the three most frequently appeared words are:"
NOISE = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."

# name: (kind, haystack, type_needle_k, type_needle_v, num_needle_k, num_needle_v, num_needle_q), synthetic.yaml
NIAH_TASKS = {
    "niah_single_1": ("noise", "words", "numbers", 1, 1, 1),
    "niah_single_2": ("essay", "words", "numbers", 1, 1, 1),
    "niah_single_3": ("essay", "words", "uuids", 1, 1, 1),
    "niah_multikey_1": ("essay", "words", "numbers", 4, 1, 1),
    "niah_multikey_2": ("needle", "words", "numbers", 1, 1, 1),
    "niah_multikey_3": ("needle", "uuids", "uuids", 1, 1, 1),
    "niah_multivalue": ("essay", "words", "numbers", 1, 4, 1),
    "niah_multiquery": ("essay", "words", "numbers", 1, 1, 4),
}
TASKS = (*NIAH_TASKS, "vt", "cwe", "fwe")
# tokens_to_generate of constants.py
NEW_TOKENS = {**dict.fromkeys(NIAH_TASKS, 128), "vt": 30, "cwe": 120, "fwe": 50, "qa_1": 32, "qa_2": 32}

def _words(text: str) -> list[str]:
    return text.split()


# Keys are "adjective-noun" as RULER's (wonderwords' lists, not shipped here: these 100 x 100 instead).
ADJECTIVES = _words("""able acid alert amber ample angry aware azure bald basic bitter black blank bold brave brief bright
broad brown busy calm cheap chief civil clean clear close cold cool crisp cruel curly damp dark dear deep dense
dirty dry dull eager early easy elder empty equal exact faint fair false fancy fast fierce final fine firm flat
fond formal fresh full funny gentle giant glad golden grand green grim gross happy hard harsh heavy hidden high
hollow honest huge humble icy ideal idle inner jolly keen kind large late lazy lean light live livid local lone
long loose loud lucky""")
NOUNS = _words("""acorn anchor apple arrow attic badge bamboo banjo barn basket beacon bell bench berry blanket boat bonnet
bottle bucket button cabin cactus camera candle canoe canvas carpet castle cellar chair cherry chimney circle
cliff clock cloud collar comet copper cotton cradle crater crown cup curtain daisy desert diamond dragon drum eagle
engine falcon feather fence fiddle flag flute forest fossil fountain garden garlic glacier glove goblet harbor
helmet hammer island ivory jacket jungle kettle kite ladder lagoon lantern lemon letter lizard magnet maple marble
meadow mirror mitten needle orchid otter paddle parrot pebble pepper piano pillow planet pocket pulley quill""")
assert len(ADJECTIVES) == 100 and len(NOUNS) == 100, (len(ADJECTIVES), len(NOUNS))
# Common and frequent words: pronounceable pseudo-words (RULER samples English words; its lists are not shipped)
_CONS, _VOWELS = "bdfgklmnprstvz", "aeiou"
_SYLLABLES = [c + v for c in _CONS for v in _VOWELS]  # 70
PSEUDO_WORDS = len(_SYLLABLES) ** 3  # 343,000 three-syllable words: enough for 1M tokens of list


def pseudo_word(index: int, syllables: int = 3) -> str:
    s = len(_SYLLABLES)
    return "".join(_SYLLABLES[index // s ** k % s] for k in reversed(range(syllables)))


def sample_seed(task: str, ctx: int, index: int) -> int:
    """The seed of one sample: fixed by (task, context, index), the same on every machine and Python."""
    return int.from_bytes(hashlib.sha256(f"ruler/{task}/{ctx}/{index}".encode()).digest()[:8], "big")


def depth_order(depths: int) -> list[float]:
    """The depths (fractions 0..1, RULER's linspace) in an order whose every prefix is spread out: sample i
    takes ``order[i % depths]``, so 8 samples of 10 depths still reach both ends and the middle."""
    grid = [i / (depths - 1) for i in range(depths)] if depths > 1 else [0.5]
    order = [0]
    while len(order) < len(grid):
        rest = [i for i in range(len(grid)) if i not in order]
        order.append(max(rest, key=lambda i: (min(abs(grid[i] - grid[j]) for j in order), -i)))
    return [grid[i] for i in order]


def _value(rng: random.Random, kind: str, half: int | None = None) -> str:
    """A needle's key or value; ``half`` (0 or 1) draws word keys from the even or odd adjectives only."""
    if kind == "numbers":  # generate_random_number(7)
        return str(rng.randint(10 ** 6, 10 ** 7 - 1))
    if kind == "words":
        return f"{rng.choice(ADJECTIVES if half is None else ADJECTIVES[half::2])}-{rng.choice(NOUNS)}"
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


class UnitSeq:
    """A haystack sequence of units, ``unit(i)`` for any i >= 0; ``key`` names it for the token counts' cache."""

    key: str = ""

    def unit(self, i: int) -> str:
        raise NotImplementedError


class TextSeq(UnitSeq):
    """Sentences of a text, wrapping around at its end (RULER repeats a short essay)."""

    def __init__(self, key: str, texts: Sequence[str]) -> None:
        self.key, self.texts = key, texts

    def unit(self, i: int) -> str:
        return self.texts[i % len(self.texts)]


class NeedlePool(UnitSeq):
    """Distractor needles of the 'needle' haystack (multikey_2, multikey_3), drawn in blocks of 4096 from
    seeds fixed by the task, so any prefix is the same however far it was drawn; shared by the task's
    samples, each starting at its own offset (RULER draws them per sample). Word keys of distractors use
    the odd-numbered adjectives and queried keys the even ones, so no distractor carries a queried key."""

    BLOCK = 4096

    def __init__(self, task: str) -> None:
        self.key, self.task, self.blocks = f"pool:{task}", task, {}

    def unit(self, i: int) -> str:
        b = i // self.BLOCK
        if b not in self.blocks:
            _, type_k, type_v, *_ = NIAH_TASKS[self.task]
            rng = random.Random(sample_seed(self.task, 0, -1 - b))
            self.blocks[b] = [line(NEEDLE.format(type_needle_v=type_v, key=_value(rng, type_k, 1),
                                                 value=_value(rng, type_v)), True) for _ in range(self.BLOCK)]
        return self.blocks[b][i % self.BLOCK]


class NumberLabels(UnitSeq):
    """The labels of a numbered list as units: "1." then " 2.", " 3.", ... (common words' list)."""

    key = "numbers"

    def unit(self, i: int) -> str:
        return f" {i + 1}." if i else "1."


@dataclass
class Draft:
    """One sample before its haystack size ``n`` is known (see the module docstring)."""

    before: str
    after: str
    answer_prefix: str
    answers: list[str]
    depth: float | None
    newline: bool  # units end with "\n" (line haystacks); else they start with " " (running text)
    repeat: str | None = None  # a constant haystack unit (noise)
    seq: UnitSeq | None = None  # or a sequence of haystack units (essay sentences, distractor needles)
    start: int = 0  # where in ``seq`` this sample's haystack starts
    inserts: list[tuple[float, str]] = field(default_factory=list)  # (fraction of the haystack, unit)
    bag: Callable[[int], list[tuple[str, int]]] | None = None  # cwe/fwe: the multiset of word units for n
    numbered: Callable[[int], int] | None = None  # cwe: how many numbered entries (" 2.", " 3.", ...) for n
    listed: UnitSeq | None = None  # cwe: the uncommon words, of which the first n are in the list ...
    listed_times: int = 0  # ... each this many times
    order: Callable[[int], list[str]] | None = None  # cwe/fwe: the units for n, in order
    shorter: Draft | None = None  # the same sample without its few-shot example, where that does not fit
    labels: UnitSeq | None = None  # qa: a label before each unit ("Document k:\n"), counted as units too

    def units(self, n: int) -> list[str]:
        """The context's units for haystack size ``n``: haystack units with the needles between them."""
        if self.order is not None:
            return self.order(n)
        hay = [self.repeat] * n if self.repeat is not None else [self.seq.unit(self.start + i) for i in range(n)]
        # from the end, so indexes stay valid; of two at one place the later-listed goes in first, so the
        # earlier one ends up before it (a variable chain keeps its order)
        for _, (fraction, text) in sorted(enumerate(self.inserts), key=lambda p: (-p[1][0], -p[0])):
            hay.insert(round(fraction * n), text)
        if self.labels is not None:
            hay = [u for k, unit in enumerate(hay) for u in (self.labels.unit(k), unit)]
        return hay


def line(text: str, newline: bool) -> str:
    return text + "\n" if newline else " " + text


def niah(task: str, rng: random.Random, depth: float, hay: UnitSeq | None) -> Draft:
    """niah.py's generate_input_output: needles, query, answers, and the template's singular form."""
    kind, type_k, type_v, num_k, num_v, num_q = NIAH_TASKS[task]
    num_k = max(num_k, num_q)
    newline = kind != "essay"
    keys: list[str] = []
    values: list[list[str]] = []
    while len(keys) < num_k:
        key = _value(rng, type_k, 0 if kind == "needle" else None)
        if key not in keys:
            keys.append(key)
            values.append([_value(rng, type_v) for _ in range(num_v)])
    queried = rng.sample(range(num_k), num_q)
    answers = [v for i in queried for v in values[i]]
    inserts = []
    for k, key in enumerate(keys):
        for j, value in enumerate(values[k]):
            where = depth if (k == queried[0] and j == 0) else rng.random()
            inserts.append((where, line(NEEDLE.format(type_needle_v=type_v, key=key, value=value), newline)))
    queries = [keys[i] for i in queried]
    query = ", ".join(queries[:-1]) + ", and " + queries[-1] if len(queries) > 1 else queries[0]
    template, noun = NIAH + NIAH_PREFIX, type_v
    if num_q * num_v == 1:
        template = (template.replace("Some", "A").replace("are all", "is").replace("are", "is")
                    .replace("answers", "answer"))
        noun = type_v[:-1]
    text = template.format(type_needle_v=noun, query=query, context="\0")
    before, _, rest = text.partition("\0")
    question, _, _ = rest.partition(NIAH_PREFIX[:10])
    prefix = rest[len(question):]
    common = {"before": before, "after": question, "answer_prefix": prefix, "answers": answers, "depth": depth,
              "newline": newline, "inserts": inserts}
    if kind == "noise":
        return Draft(**common, repeat=line(NOISE, True))
    if kind == "needle":
        return Draft(**common, seq=NeedlePool(task), start=rng.randrange(1000))
    return Draft(**common, seq=hay)


def _vars(rng: random.Random, count: int, letters: int) -> list[str]:
    out: list[str] = []
    while len(out) < count:
        name = "".join(rng.choices(string.ascii_uppercase, k=letters))
        if name not in out:
            out.append(name)
    return out


def _chain(rng: random.Random, letters: int, hops: int = 4) -> tuple[list[str], list[str], str]:
    names = _vars(rng, hops + 1, letters)
    value = str(rng.randint(10000, 99999))
    lines = [f"VAR {names[0]} = {value}"] + [f"VAR {names[j + 1]} = VAR {names[j]} " for j in range(hops)]
    return names, lines, value


def vt(rng: random.Random, depth: float, icl_lines: int) -> Draft:
    """variable_tracking.py: one chain of 4 hops in the noise haystack, after a one-shot example
    (``icl_lines`` noise lines; RULER fits its example to 500 tokens)."""
    names, chain, value = _chain(rng, 5)
    spots = [depth] + sorted(depth + (1 - depth) * rng.random() for _ in chain[1:])
    body, prefix = VT.format(context="\0", query=value), VT_PREFIX.format(num_v=len(names), query=value)
    before, _, after = body.partition("\0")
    draft = Draft(before=before, after=after, answer_prefix=prefix, answers=names, depth=depth, newline=True,
                  repeat=line(NOISE, True), inserts=[(s, line(c, True)) for s, c in zip(spots, chain, strict=True)])
    if icl_lines >= 0:
        ex_names, ex_chain, ex_value = _chain(rng, 3)
        noise = [NOISE] * icl_lines
        for j, pos in enumerate(sorted(rng.sample(range(icl_lines + len(ex_chain)), len(ex_chain)))):
            noise.insert(pos, ex_chain[j])
        example = (VT.format(context="\n".join(noise), query=ex_value)
                   + VT_PREFIX.format(num_v=len(ex_names), query=ex_value) + " " + " ".join(ex_names) + "\n")
        draft.shorter = Draft(**{**draft.__dict__, "shorter": None})
        draft.before = example + "\n" + before
    return draft


def _numbered(words: Sequence[str]) -> str:
    return " ".join(f"{i + 1}. {w}" for i, w in enumerate(words))


def cwe(rng: random.Random, ctx: int) -> Draft:
    """common_words_extraction.py: 10 words 30 times (6 below 4k), the others 3 times (1 below 4k),
    shuffled and numbered, after one worked example."""
    small = ctx < 4096
    f_cw, f_ucw = (6, 1) if small else (30, 3)
    ex_n, ex_f, ex_u = (20, 3, 1) if small else (40, 10, 3)
    syllables = 2 if small else 3  # below 4k two-syllable words (4,900), so that 1k prompts fit byte-level tokenizers
    space = len(_SYLLABLES) ** syllables
    indexes = rng.sample(range(space), 10 + ex_n)
    common = [pseudo_word(i, syllables) for i in indexes[:10]]
    example_words = [pseudo_word(i, syllables) for i in indexes[10:]]
    ex_list = example_words[:10] * ex_f + example_words[10:] * ex_u
    rng.shuffle(ex_list)
    seen = set(indexes)
    rest_rng = random.Random(rng.getrandbits(64))
    uncommon: list[str] = []

    def extend(n: int) -> None:  # the uncommon words, drawn as far as needed; a longer list extends a shorter
        while len(uncommon) < min(n, space - len(indexes)):
            i = rest_rng.randrange(space)
            if i not in seen:
                seen.add(i)
                uncommon.append(pseudo_word(i, syllables))

    class Uncommon(UnitSeq):
        def unit(self, i: int) -> str:
            extend(i + 1)
            return " " + uncommon[i] if i < len(uncommon) else ""

    def bag(n: int) -> list[tuple[str, int]]:
        return [(" " + w, f_cw) for w in common]

    def numbered(n: int) -> int:
        extend(n)
        return 10 * f_cw + len(uncommon[:n]) * f_ucw

    shuffle_seed = rng.getrandbits(64)

    def order(n: int) -> list[str]:
        extend(n)
        words = common * f_cw + uncommon[:n] * f_ucw
        random.Random(shuffle_seed).shuffle(words)
        return [u for i, w in enumerate(words) for u in (f" {i + 1}." if i else "1.", " " + w)]

    body = CWE.format(context="\0")
    before, _, after = body.partition("\0")
    example = CWE.format(context=_numbered(ex_list)) + CWE_PREFIX + " " + _numbered(example_words[:10])
    draft = Draft(before=example + "\n" + before, after=after, answer_prefix=CWE_PREFIX, answers=common, depth=None,
                  newline=False, bag=bag, numbered=numbered, order=order, listed=Uncommon(), listed_times=f_ucw)
    draft.shorter = Draft(**{**draft.__dict__, "before": before, "shorter": None})
    return draft


ZETA2 = math.pi ** 2 / 6  # RULER's scipy zeta(alpha) at its alpha = 2


def fwe(rng: random.Random, ctx: int, new_tokens: int) -> Draft:
    """freq_words_extraction.py: coded 6-letter words with Zipf (alpha 2) counts, the most frequent made '...'
    (noise); the answer is the next three. Vocabulary size (ctx - new tokens) // 50, as RULER's."""
    size = max(8, (ctx - new_tokens) // 50)
    vocab: set[str] = set()
    while len(vocab) < size:
        vocab.add("".join(rng.choices(string.ascii_lowercase, k=6)))
    words = sorted(vocab)
    rng.shuffle(words)
    words[0] = "..."
    shuffle_seed = rng.getrandbits(64)

    def counts(n: int) -> list[int]:
        return [int(n * k ** -2.0 / ZETA2) for k in range(1, len(words) + 1)]

    def bag(n: int) -> list[tuple[str, int]]:
        return [(" " + w, c) for w, c in zip(words, counts(n), strict=True) if c]

    def order(n: int) -> list[str]:
        sampled = [w for w, c in zip(words, counts(n), strict=True) for _ in range(c)]
        random.Random(shuffle_seed).shuffle(sampled)
        return [" " + w for w in sampled]

    before, _, after = FWE.format(context="\0").partition("\0")
    return Draft(before=before, after=after, answer_prefix=FWE_PREFIX, answers=words[1:4], depth=None, newline=False,
                 bag=bag, order=order)
