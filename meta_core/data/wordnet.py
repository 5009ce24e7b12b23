"""``meta-core data wordnet --out DIR``: a labelled text corpus from WordNet 3.0's database
files (Debian's ``wordnet-base``, ``/usr/share/wordnet``), for few-shot text classification.

Each row of ``DIR/wordnet.csv`` is one synset with a definition:

- ``text``: the gloss's definition, the part before its first quoted example (``; "``);
  synsets with no definition are left out;
- ``lexname``: its lexicographer file (``noun.animal``; ``lexnames(5WN)``);
- ``hypernym``: for nouns and verbs, the synset id of its first hypernym pointer (``@``, or
  ``@i`` for an instance such as a person or a city); empty for adjectives, adverbs and the
  tops of the hierarchy;
- ``synset``: its id, ``<first lemma>.<pos>.<offset>`` (``dog.n.02084071``): readable, and
  unique because a synset's offset is unique within its part of speech's data file;
- ``words``: its lemmas, spaces for underscores, joined by ", ";
- ``pos``: ``n``, ``v``, ``a`` or ``r``, the data file's part of speech (adjective satellites,
  ``s`` in the file, are ``a`` as in WordNet's index files).

Rows are ordered by part of speech (n, v, a, r, WordNet's order) then offset, so the same
files always give the same CSV. Format: ``wndb(5WN)``.
"""

from __future__ import annotations

import csv
import logging
import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from meta_core.data.folders import DataError

log = logging.getLogger(__name__)
WORDNET_DIR = Path("/usr/share/wordnet")
CSV_NAME = "wordnet.csv"
COLUMNS = ("text", "lexname", "hypernym", "synset", "words", "pos")
# Part of speech -> its data file, in WordNet's order (noun, verb, adjective, adverb).
DATA_FILES = {"n": "data.noun", "v": "data.verb", "a": "data.adj", "r": "data.adv"}
HYPERNYM_POINTERS = ("@", "@i")
# A class must fill a task's support and query sets: 5 shots + 15 queries.
TASK_ROWS = 20
INSTALL_HINT = "apt-get install wordnet-base, or pass --wordnet-dir"
# lexnames(5WN): lex_filenum -> lexicographer file.
LEXNAMES = (
    "adj.all", "adj.pert", "adv.all", "noun.Tops", "noun.act", "noun.animal", "noun.artifact",
    "noun.attribute", "noun.body", "noun.cognition", "noun.communication", "noun.event",
    "noun.feeling", "noun.food", "noun.group", "noun.location", "noun.motive", "noun.object",
    "noun.person", "noun.phenomenon", "noun.plant", "noun.possession", "noun.process",
    "noun.quantity", "noun.relation", "noun.shape", "noun.state", "noun.substance", "noun.time",
    "verb.body", "verb.change", "verb.cognition", "verb.communication", "verb.competition",
    "verb.consumption", "verb.contact", "verb.creation", "verb.emotion", "verb.motion",
    "verb.perception", "verb.possession", "verb.social", "verb.stative", "verb.weather",
    "adj.ppl",
)  # fmt: skip
# An adjective's syntactic marker, written onto the word: galore(ip), elect(p), former(a).
MARKER = re.compile(r"\((a|p|ip)\)$")


@dataclass(frozen=True)
class Synset:
    """One line of a data file, as far as the corpus needs it."""

    pos: str
    offset: int
    lexname: str
    lemmas: tuple[str, ...]  # as in the file: underscores for spaces, markers removed
    hypernym: tuple[str, int] | None  # (pos, offset) of the first hypernym pointer
    definition: str

    @property
    def name(self) -> str:
        return synset_name(self.lemmas[0], self.pos, self.offset)


@dataclass(frozen=True)
class CorpusSummary:
    """What a written corpus offers training: its rows, lexnames and hypernym classes."""

    rows: int
    lexnames: int
    hypernym_rows: Counter[str]  # hypernym synset id -> rows under it

    def classes(self, min_rows: int = TASK_ROWS) -> int:
        """Hypernym classes with at least ``min_rows`` rows."""
        return sum(1 for n in self.hypernym_rows.values() if n >= min_rows)

    def line(self) -> str:
        return (
            f"{self.rows} rows, {self.lexnames} lexnames, {len(self.hypernym_rows)} hypernym"
            f" classes ({self.classes()} with >= {TASK_ROWS} rows)"
        )


def synset_name(lemma: str, pos: str, offset: int) -> str:
    return f"{lemma}.{pos}.{offset:08d}"


def definition(gloss: str) -> str:
    """The definition part of a gloss: before its first quoted example, without the ``;``
    that separates them. A gloss that is only examples has none."""
    text = gloss.split('; "', 1)[0].strip()
    return "" if text.startswith('"') else text.rstrip(";").rstrip()


def parse_synset(line: str, pos: str) -> Synset:
    """``offset lex_filenum ss_type w_cnt (word lex_id)* p_cnt (symbol offset pos st)*
    [frames] | gloss``; w_cnt is hexadecimal, p_cnt decimal (``wndb(5WN)``)."""
    head, _, gloss = line.partition(" | ")
    fields = head.split()
    w_cnt = int(fields[3], 16)
    lemmas = tuple(MARKER.sub("", w) for w in fields[4 : 4 + 2 * w_cnt : 2])
    if len(lemmas) != w_cnt or not lemmas:
        raise ValueError(f"{w_cnt} words announced, {len(lemmas)} found")
    p_at = 4 + 2 * w_cnt
    pointers = fields[p_at + 1 : p_at + 1 + 4 * int(fields[p_at])]
    hypernym = next(
        (
            ("a" if pointers[i + 2] == "s" else pointers[i + 2], int(pointers[i + 1]))
            for i in range(0, len(pointers), 4)
            if pointers[i] in HYPERNYM_POINTERS
        ),
        None,
    )
    return Synset(
        pos, int(fields[0]), LEXNAMES[int(fields[1])], lemmas, hypernym, definition(gloss)
    )


def read_text(path: Path) -> str:
    """WordNet 3.0's files are ASCII; a later or edited database may be UTF-8 or latin-1:
    UTF-8 is tried first, and latin-1, which decodes any byte, is the fallback."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def read_synsets(wordnet_dir: Path) -> list[Synset]:
    """Every synset of the four data files, ordered by part of speech then offset."""
    if not wordnet_dir.is_dir():
        raise DataError(f"no WordNet folder at {wordnet_dir}: {INSTALL_HINT}")
    missing = [name for name in DATA_FILES.values() if not (wordnet_dir / name).is_file()]
    if missing:
        raise DataError(f"{wordnet_dir} lacks WordNet's {', '.join(missing)}: {INSTALL_HINT}")
    synsets = []
    for pos, name in DATA_FILES.items():
        for number, line in enumerate(read_text(wordnet_dir / name).split("\n"), start=1):
            if not line.strip() or line.startswith("  "):  # the license header
                continue
            try:
                synsets.append(parse_synset(line, pos))
            except (ValueError, IndexError) as exc:
                raise DataError(
                    f"{wordnet_dir / name}:{number} is not a WordNet synset line ({exc})"
                ) from None
    order = list(DATA_FILES)
    return sorted(synsets, key=lambda s: (order.index(s.pos), s.offset))


def corpus_rows(synsets: list[Synset]) -> list[tuple[str, ...]]:
    """The CSV's rows (``COLUMNS``), one per synset with a definition; a hypernym is named by
    its synset id, which needs its first lemma."""
    names = {(s.pos, s.offset): s.name for s in synsets}
    rows: list[tuple[str, ...]] = []
    for s in synsets:
        if not s.definition:
            continue
        hypernym = ""
        if s.hypernym is not None:
            if s.hypernym not in names:
                pos, offset = s.hypernym
                raise DataError(
                    f"synset {s.name}'s hypernym {offset:08d} is not in {DATA_FILES[pos]}"
                )
            hypernym = names[s.hypernym]
        words = ", ".join(lemma.replace("_", " ") for lemma in s.lemmas)
        rows.append((s.definition, s.lexname, hypernym, s.name, words, s.pos))
    return rows


def write_wordnet(out: Path, wordnet_dir: Path = WORDNET_DIR) -> Path:
    """Write ``out/wordnet.csv`` (UTF-8) from the database in ``wordnet_dir``, atomically:
    a reader sees the previous file or the whole new one. Returns the CSV's path."""
    start = time.perf_counter()
    rows = corpus_rows(read_synsets(wordnet_dir))
    out.mkdir(parents=True, exist_ok=True)
    path = out / CSV_NAME
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        writer.writerows(rows)
    tmp.replace(path)
    log.info("wordnet: %d rows to %s in %.1f s", len(rows), path, time.perf_counter() - start)
    return path


def summarize(path: Path) -> CorpusSummary:
    """Count what a written corpus offers: read back from the CSV that training reads."""
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    hypernyms = Counter(row["hypernym"] for row in rows if row["hypernym"])
    return CorpusSummary(len(rows), len({row["lexname"] for row in rows}), hypernyms)
