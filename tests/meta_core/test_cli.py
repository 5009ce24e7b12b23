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
