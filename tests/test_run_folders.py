"""Run folders: runs started at once in one output folder get distinct ``version_N`` folders (Lightning's
own choice lists the folder, so two processes could take the same N and mix their metrics.csv)."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from lightning.pytorch.utilities import rank_zero_only

from aug_attn_tasks.train import _claim_version


def test_versions_count_on_from_the_highest_taken(tmp_path: Path) -> None:
    folder = tmp_path / "recipe"
    assert _claim_version(folder) == 0
    (folder / "version_7").mkdir()
    (folder / "version_x").mkdir()  # not a version: ignored
    assert _claim_version(folder) == 8
    assert sorted(p.name for p in folder.iterdir()) == ["version_0", "version_7", "version_8", "version_x"]


def test_concurrent_processes_never_share_a_version(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    with context.Pool(4) as pool:
        versions = pool.map(_claim_version, [tmp_path / "recipe"] * 16)
    assert sorted(versions) == list(range(16))


def test_non_zero_ranks_leave_the_choice_to_lightning(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(rank_zero_only, "rank", 1)  # what Lightning read from LOCAL_RANK / RANK / SLURM_PROCID
    assert _claim_version(tmp_path / "recipe") is None
    assert not (tmp_path / "recipe").exists()
