"""``meta-core`` (meta_core/cli.py): what the parser alone cannot refuse is refused as it
refuses (its train, eval and data commands run in test_train.py and tasks/)."""

from __future__ import annotations

from pathlib import Path

import pytest

from meta_core.cli import main


def test_train_without_a_preset_is_a_usage_error(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["train", "--out", str(tmp_path / "run")])
    assert exited.value.code == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("usage: meta-core ")
    assert (
        err[-1]
        == "meta-core: error: train needs --preset (only --resume reads the run's own config)"
    )
    assert not (tmp_path / "run").exists()


def test_half_cheetah_without_mujoco_says_what_to_install(tmp_path: Path, capsys, monkeypatch):
    import sys

    monkeypatch.delitem(sys.modules, "meta_core.rl.half_cheetah", raising=False)
    monkeypatch.setitem(sys.modules, "mujoco", None)  # as if not installed
    with pytest.raises(SystemExit) as exited:
        args = ["--set", "train.iterations=1", "--set", "policy.hidden=[4]"]
        main(["train", "--preset", "half-cheetah-vel", "--out", str(tmp_path / "run"), *args])
    assert exited.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "meta-core: error: half-cheetah needs gymnasium and mujoco, and mujoco is not "
        "installed: pip install -e '.[rl]'"
    )
    assert not (tmp_path / "run").exists()


def test_data_wordnet_writes_the_corpus_and_prints_its_summary(tmp_path: Path, capsys) -> None:
    wordnet = tmp_path / "wn"
    wordnet.mkdir()
    header = "  1 This software and database is being provided to you, the LICENSEE, by  \n"
    lines = {
        "noun": '00001740 03 n 01 entity 0 000 | that which is perceived; "an entity"  ',
        "verb": "00001740 29 v 01 breathe 0 000 01 + 02 00 | draw air into the lungs  ",
        "adj": "00001740 00 a 01 able 0 000 | having the necessary means or skill  ",
        "adv": "00001740 02 r 01 a_cappella 0 000 | without musical accompaniment  ",
    }
    for name, line in lines.items():
        (wordnet / f"data.{name}").write_text(header + line + "\n")
    out = tmp_path / "corpus"
    assert main(["data", "wordnet", "--out", str(out), "--wordnet-dir", str(wordnet)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"corpus: {out / 'wordnet.csv'}",
        "4 rows, 4 lexnames, 0 hypernym classes (0 with >= 20 rows)",
    ]
    assert (out / "wordnet.csv").read_text().splitlines()[1] == (
        "that which is perceived,noun.Tops,,entity.n.00001740,entity,n"
    )


def test_data_wordnet_without_wordnet_exits_2_saying_what_to_do(tmp_path: Path, capsys) -> None:
    missing = tmp_path / "none"
    assert main(["data", "wordnet", "--out", str(tmp_path), "--wordnet-dir", str(missing)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        f"meta-core data wordnet: no WordNet folder at {missing}:"
        " apt-get install wordnet-base, or pass --wordnet-dir\n"
    )
