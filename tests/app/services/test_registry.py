"""Hot reload of the model folders: what is added, refused, kept and dropped."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
from pathlib import Path

import pytest

from app.__main__ import main
from app.services.registry import MetaModelRegistry, Reload
from meta_core.artifact import MAX_ARCHIVE_MEMBER
from tests.conftest import ROOT
from tests.utils.meta_models import new_version


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    models = tmp_path / "models"
    models.mkdir()
    shutil.copytree(ROOT / "models" / "sinusoid", models / "sinusoid")
    return models


def test_a_new_version_is_served_and_becomes_the_default(folder: Path):
    registry = MetaModelRegistry.load(folder)
    assert registry.version_names("sinusoid") == ["1.0.0"]
    unchanged = registry.reload()
    assert unchanged.added == unchanged.removed == unchanged.refused == []
    new_version(folder / "sinusoid", folder / "sinusoid-1.1.0", "1.1.0", nudge=0.05)
    report = registry.reload()
    assert report.added == [f"sinusoid 1.1.0 ({folder / 'sinusoid-1.1.0'})"]
    assert registry.for_new_task("sinusoid").version == "1.1.0"
    assert registry.exact("sinusoid", "1.0.0") is not None


def test_an_invalid_artifact_is_refused_and_never_replaces_a_working_one(folder, caplog):
    registry = MetaModelRegistry.load(folder)
    served = registry.exact("sinusoid", "1.0.0")
    # A broken new artifact: refused, logged, not served.
    shutil.copytree(folder / "sinusoid", folder / "broken")
    (folder / "broken" / "weights.safetensors").write_bytes(b"garbage")
    with caplog.at_level(logging.ERROR):
        report = registry.reload()
    assert len(report.refused) == 1 and "broken" in report.refused[0]
    assert "content hash mismatch" in report.refused[0]
    assert "meta-model refused, not served" in caplog.text
    # The working artifact's own files corrupted in place: it stays served as it was loaded.
    (folder / "sinusoid" / "manifest.json").write_text("{")
    report = registry.reload()
    assert any("not valid JSON" in why for why in report.refused)
    assert registry.exact("sinusoid", "1.0.0") is served
    # Refused once per change of its files, not at every scan, and still served after it.
    assert registry.reload().refused == []
    assert registry.exact("sinusoid", "1.0.0") is served


def test_a_version_is_immutable(folder: Path):
    registry = MetaModelRegistry.load(folder)
    served = registry.exact("sinusoid", "1.0.0")
    new_version(folder / "sinusoid", folder / "impostor", "1.0.0", nudge=0.1)
    report = registry.reload()
    assert (
        len(report.refused) == 1 and "is already served from another artifact" in report.refused[0]
    )
    assert registry.exact("sinusoid", "1.0.0") is served
    # The same artifact twice (an image's copy and a volume's): served once, refused never.
    shutil.rmtree(folder / "impostor")
    shutil.copytree(folder / "sinusoid", folder / "copy")
    assert registry.reload().refused == []
    assert registry.version_names("sinusoid") == ["1.0.0"]


def test_a_removed_folder_stops_being_served(folder: Path):
    new_version(folder / "sinusoid", folder / "sinusoid-1.1.0", "1.1.0", nudge=0.05)
    registry = MetaModelRegistry.load(folder)
    shutil.rmtree(folder / "sinusoid-1.1.0")
    report = registry.reload()
    assert report.removed == [f"sinusoid 1.1.0 ({folder / 'sinusoid-1.1.0'})"]
    assert registry.for_new_task("sinusoid").version == "1.0.0"


def test_two_folders_image_and_trained(folder: Path, tmp_path: Path):
    trained = tmp_path / "trained"
    trained.mkdir()
    registry = MetaModelRegistry.load(folder, trained)
    new_version(folder / "sinusoid", trained / "sinusoid-2", "2.0.0", nudge=0.05)
    assert registry.reload().added == [f"sinusoid 2.0.0 ({trained / 'sinusoid-2'})"]
    shutil.rmtree(trained)  # the second folder may be missing: it holds nothing then
    assert registry.reload().removed and registry.version_names("sinusoid") == ["1.0.0"]


def test_cli_models_list_and_reload(folder, monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("MODEL_DIR", str(folder))
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    from app.core.config import get_settings

    get_settings.cache_clear()
    try:
        assert main(["models", "list"]) == 0
        out = capsys.readouterr().out
        assert out.startswith("sinusoid\t1.0.0\tsha256:") and out.rstrip().endswith("(default)")
        shutil.copytree(folder / "sinusoid", folder / "broken")
        (folder / "broken" / "manifest.json").write_text("[]")
        assert main(["models", "reload"]) == 1
        captured = capsys.readouterr()
        assert "refused:" in captured.err and "broken" in captured.err
        assert "within MODEL_POLL_SECONDS" in captured.out
    finally:
        get_settings.cache_clear()


def test_a_served_version_changed_in_place_is_refused(folder: Path):
    registry = MetaModelRegistry.load(folder)
    served = registry.exact("sinusoid", "1.0.0")
    shutil.rmtree(folder / "sinusoid")
    new_version(ROOT / "models" / "sinusoid", folder / "sinusoid", "1.0.0", nudge=0.1)
    report = registry.reload()
    assert len(report.refused) == 1 and "changed in place" in report.refused[0]
    assert registry.exact("sinusoid", "1.0.0") is served
    # Being copied in under a dot name: not looked at until renamed into place.
    new_version(ROOT / "models" / "sinusoid", folder / ".incoming", "3.0.0")
    assert registry.reload().added == []
    (folder / ".incoming").rename(folder / "sinusoid-3")
    assert registry.reload().added == [f"sinusoid 3.0.0 ({folder / 'sinusoid-3'})"]


def unblock(fifo: Path) -> None:
    """End of file for a reader blocked on ``fifo``, if one is."""
    with contextlib.suppress(OSError):  # ENXIO: no reader
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


@pytest.mark.parametrize("name", ["manifest.json", "weights.safetensors"])
def test_a_fifo_or_a_huge_file_in_a_model_folder_is_refused_unread(folder, name):
    """Regular files only, of at most MAX_ARCHIVE_MEMBER bytes, as in an archive: a FIFO named
    manifest.json used to hold the scan (and every later one) forever."""
    registry = MetaModelRegistry.load(folder)
    for kind in ("fifo", "huge"):
        shutil.copytree(folder / "sinusoid", folder / kind)
        (folder / kind / name).unlink()
    os.mkfifo(folder / "fifo" / name)
    with open(folder / "huge" / name, "wb") as f:
        f.truncate(MAX_ARCHIVE_MEMBER + 1)  # sparse: nothing written
    reports: list[Reload] = []
    scan = threading.Thread(target=lambda: reports.append(registry.reload()), daemon=True)
    scan.start()
    scan.join(timeout=30)
    unblock(folder / "fifo" / name)
    assert reports, "the scan is still waiting"
    assert sorted(reports[0].refused) == [
        f"{folder / 'fifo'}: {folder / 'fifo'}: {name} is not a regular file",
        f"{folder / 'huge'}: {folder / 'huge'}: {name} is larger than {MAX_ARCHIVE_MEMBER} bytes",
    ]
    assert registry.version_names("sinusoid") == ["1.0.0"]
