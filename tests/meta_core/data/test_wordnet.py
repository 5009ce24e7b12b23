"""WordNet's data files as a labelled corpus: every field of a synset line read (hexadecimal
word counts, pointers, verb frames, adjective markers), definitions cut before their examples,
hypernyms named by their synset ids, and a folder without WordNet one line saying what to do."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import pytest

from meta_core.data.folders import DataError
from meta_core.data.wordnet import CorpusSummary, summarize, write_wordnet
from tests.utils.text import require_wordnet

HEADER = (
    "  1 This software and database is being provided to you, the LICENSEE, by  \n"
    "  2 Princeton University under the following license.  By obtaining, using  \n"
    "  3   \n"
)
NOUNS = [
    "00001740 03 n 01 entity 0 001 ~ 00002000 n 0000 | that which is perceived or known"
    " or inferred to have its own distinct existence (living or nonliving)  ",
    "00002000 05 n 02 dog 0 domestic_dog 0 003 @ 00001740 n 0000 #m 00009000 n 0000"
    " ~ 00005000 n 0000 | a member of the genus Canis; occurs in many breeds;"
    ' "the dog barked all night"; "a second example"  ',
    "00002500 18 n 01 physicist 0 001 @ 00001740 n 0000 | a scientist trained in physics  ",
    "00003000 18 n 02 Einstein 0 Albert_Einstein 0 002 @i 00002500 n 0000 ; 00001740 n 0000"
    " | physicist born in Germany (1879-1955)  ",
    '00004000 05 n 01 example_only 0 001 @ 00001740 n 0000 | "only an example"  ',
    "00005000 05 n 0a pooch 0 doggie 0 doggy 0 barker 0 bow-wow 0 hound 0 mutt 0 cur 0"
    " tyke 0 pup 0 001 @ 00002000 n 0000 | informal terms for dogs  ",
]
VERBS = [
    "00001740 29 v 04 breathe 0 take_a_breath 0 respire 0 suspire 3 002 * 00002000 v 0000"
    " + 00002500 n 0303 02 + 02 00 + 08 00 | draw air into, and expel out of, the lungs;"
    ' "I can breathe better when the air is clean"  ',
    "00002000 42 v 01 be 0 001 @ 00001740 v 0000 01 + 02 00 | have the quality of being  ",
]
ADJECTIVES = [
    "00001740 00 a 01 able 0 001 ! 00002098 a 0101 | (usually followed by `to') having the"
    ' necessary means or skill; "able to swim"  ',
    "00002098 00 s 01 galore(ip) 0 001 & 00001740 a 0000 | in great numbers  ",
]
ADVERBS = [
    "00001740 02 r 01 a_cappella 0 000 | without musical accompaniment;"
    ' "they performed a cappella"  ',
    "00001900 02 r 01 caf\xe9_style 0 000 | in the manner of a caf\xe9  ",
]
ROWS = [
    ["text", "lexname", "hypernym", "synset", "words", "pos"],
    [
        "that which is perceived or known or inferred to have its own distinct existence"
        " (living or nonliving)",
        "noun.Tops",
        "",
        "entity.n.00001740",
        "entity",
        "n",
    ],
    [
        "a member of the genus Canis; occurs in many breeds",
        "noun.animal",
        "entity.n.00001740",
        "dog.n.00002000",
        "dog, domestic dog",
        "n",
    ],
    [
        "a scientist trained in physics",
        "noun.person",
        "entity.n.00001740",
        "physicist.n.00002500",
        "physicist",
        "n",
    ],
    [
        "physicist born in Germany (1879-1955)",
        "noun.person",
        "physicist.n.00002500",
        "Einstein.n.00003000",
        "Einstein, Albert Einstein",
        "n",
    ],
    [
        "informal terms for dogs",
        "noun.animal",
        "dog.n.00002000",
        "pooch.n.00005000",
        "pooch, doggie, doggy, barker, bow-wow, hound, mutt, cur, tyke, pup",
        "n",
    ],
    [
        "draw air into, and expel out of, the lungs",
        "verb.body",
        "",
        "breathe.v.00001740",
        "breathe, take a breath, respire, suspire",
        "v",
    ],
    ["have the quality of being", "verb.stative", "breathe.v.00001740", "be.v.00002000", "be", "v"],
    [
        "(usually followed by `to') having the necessary means or skill",
        "adj.all",
        "",
        "able.a.00001740",
        "able",
        "a",
    ],
    ["in great numbers", "adj.all", "", "galore.a.00002098", "galore", "a"],
    ["without musical accompaniment", "adv.all", "", "a_cappella.r.00001740", "a cappella", "r"],
    ["in the manner of a café", "adv.all", "", "café_style.r.00001900", "café style", "r"],
]


def fake_wordnet(folder: Path) -> Path:
    """A WordNet folder of a few synsets per part of speech; the adverbs in latin-1, as an
    edited database may be."""
    folder.mkdir()
    for name, lines in (("noun", NOUNS), ("verb", VERBS), ("adj", ADJECTIVES)):
        (folder / f"data.{name}").write_text(HEADER + "\n".join(lines) + "\n", encoding="ascii")
    (folder / "data.adv").write_bytes((HEADER + "\n".join(ADVERBS) + "\n").encode("latin-1"))
    return folder


def read_rows(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def test_every_synset_with_a_definition_is_a_row(tmp_path: Path):
    path = write_wordnet(tmp_path / "out", fake_wordnet(tmp_path / "wn"))
    assert path == tmp_path / "out" / "wordnet.csv"
    assert read_rows(path) == ROWS  # example_only has no definition: left out
    assert sorted(p.name for p in path.parent.iterdir()) == ["wordnet.csv"]


def test_the_corpus_is_rewritten_whole_and_the_same(tmp_path: Path):
    wordnet = fake_wordnet(tmp_path / "wn")
    first = write_wordnet(tmp_path / "out", wordnet).read_bytes()
    assert write_wordnet(tmp_path / "out", wordnet).read_bytes() == first


def test_the_summary_counts_rows_lexnames_and_hypernym_classes(tmp_path: Path):
    summary = summarize(write_wordnet(tmp_path / "out", fake_wordnet(tmp_path / "wn")))
    assert summary == CorpusSummary(
        rows=11,
        lexnames=7,
        hypernym_rows=Counter(
            {
                "entity.n.00001740": 2,
                "physicist.n.00002500": 1,
                "dog.n.00002000": 1,
                "breathe.v.00001740": 1,
            }
        ),
    )
    assert (summary.classes(1), summary.classes(2), summary.classes()) == (4, 1, 0)
    assert summary.line() == "11 rows, 7 lexnames, 4 hypernym classes (0 with >= 20 rows)"


def test_a_missing_folder_says_how_to_get_wordnet(tmp_path: Path):
    with pytest.raises(DataError) as raised:
        write_wordnet(tmp_path / "out", tmp_path / "none")
    assert str(raised.value) == (
        f"no WordNet folder at {tmp_path / 'none'}:"
        " apt-get install wordnet-base, or pass --wordnet-dir"
    )
    assert not (tmp_path / "out").exists()


def test_missing_data_files_are_named(tmp_path: Path):
    wordnet = fake_wordnet(tmp_path / "wn")
    (wordnet / "data.verb").unlink()
    (wordnet / "data.adv").unlink()
    with pytest.raises(DataError) as raised:
        write_wordnet(tmp_path / "out", wordnet)
    assert str(raised.value) == (
        f"{wordnet} lacks WordNet's data.verb, data.adv:"
        " apt-get install wordnet-base, or pass --wordnet-dir"
    )


def test_a_line_that_is_not_a_synset_names_its_file_and_line(tmp_path: Path):
    wordnet = fake_wordnet(tmp_path / "wn")
    with (wordnet / "data.adj").open("a") as f:
        f.write("00003000 00 a 03 short 0 | too few words\n")
    with pytest.raises(DataError) as raised:
        write_wordnet(tmp_path / "out", wordnet)
    assert str(raised.value) == (
        f"{wordnet / 'data.adj'}:6 is not a WordNet synset line (3 words announced, 1 found)"
    )


def test_a_hypernym_missing_from_the_files_is_an_error(tmp_path: Path):
    wordnet = fake_wordnet(tmp_path / "wn")
    with (wordnet / "data.noun").open("a") as f:
        f.write("00006000 05 n 01 stray 0 001 @ 00007000 n 0000 | points nowhere  \n")
    with pytest.raises(DataError) as raised:
        write_wordnet(tmp_path / "out", wordnet)
    assert str(raised.value) == "synset stray.n.00006000's hypernym 00007000 is not in data.noun"


@pytest.mark.wordnet
def test_debians_wordnet_gives_the_dog_its_gloss_and_hypernym(tmp_path: Path):
    path = write_wordnet(tmp_path, require_wordnet())
    rows = {row[3]: row for row in read_rows(path)[1:]}
    assert 100_000 < len(rows) < 130_000  # WordNet 3.0: 117,659 synsets, all defined
    assert rows["dog.n.02084071"] == [
        "a member of the genus Canis (probably descended from the common wolf) that has been"
        " domesticated by man since prehistoric times; occurs in many breeds",
        "noun.animal",
        "canine.n.02083346",
        "dog.n.02084071",
        "dog, domestic dog, Canis familiaris",
        "n",
    ]
    assert rows["Einstein.n.10954498"][2] == "physicist.n.10428004"  # an instance: @i
    summary = summarize(path)
    assert summary.rows == len(rows)
    assert summary.lexnames <= 45
    assert summary.classes() > 500  # enough 20-row classes for N-way tasks
