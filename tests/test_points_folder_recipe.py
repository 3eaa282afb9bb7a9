"""``aug-attn train risurconv_folder --data.root DIR`` on a user's folder, in both layouts, mixing
mesh and cloud formats, with and without normals; and ``classify`` on its checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from aug_attn_tasks.cli import main
from aug_attn_tasks.points.synthetic import SHAPES

TINY_MODEL = {
    "samples": [16, 4], "neighbors": [8, 4], "channels": [16, 32], "feature_channels": [16, 16], "global_channels": 32,
    "transformer_layers": 1, "transformer_heads": 2, "head_channels": [32], "dropout": 0.0,
}  # fmt: skip


def write_shape(path: Path, name: str, seed: int) -> None:
    """Shape ``name`` as a point file of ``path``'s format, without normals (a scan's)."""
    pos, _ = SHAPES[name](np.random.default_rng(seed), 150)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".npy":
        np.save(path, pos.astype(np.float32))
    elif path.suffix == ".txt":
        np.savetxt(path, pos, fmt="%.6f")
    elif path.suffix == ".off":  # a cloud in COFF: vertices with colours, no faces
        rows = [f"{x:.6f} {y:.6f} {z:.6f} 200 100 50 255" for x, y, z in pos]
        path.write_text(f"COFF\n{len(pos)} 0 0\n" + "\n".join(rows) + "\n")
    else:  # .obj point cloud
        path.write_text("".join(f"v {x:.6f} {y:.6f} {z:.6f}\n" for x, y, z in pos))


@pytest.mark.parametrize("layout", ["train_test", "seeded_split"])
def test_train_risurconv_folder_on_a_user_folder(tmp_path: Path, layout: str, capsys) -> None:
    root = tmp_path / "my_scans"
    suffixes = [".npy", ".txt", ".off", ".obj"]
    for label, name in enumerate(("box", "sphere", "torus")):
        for i in range(8):
            split = ("train" if i < 6 else "test") if layout == "train_test" else ""
            write_shape(root / split / name / f"scan{i}{suffixes[i % 4]}", name, 10 * label + i)
    overrides = [
        f"--data.root={root}", "--data.num_points=48", "--data.val_fraction=0.2", "--data.batch_size=6",
        f"--model={json.dumps({'name': 'risurconv', 'global_context': True, **TINY_MODEL})}",
        "--trainer.max_epochs=1", "--trainer.enable_progress_bar=false", f"--output.dir={tmp_path / 'runs'}",
    ]  # fmt: skip
    assert main(["train", "risurconv_folder", *overrides]) == 0
    printed = capsys.readouterr().out
    assert "risurconv on folder z/z: OA" in printed and "risurconv on folder z/SO3: OA" in printed
    report = json.loads(next((tmp_path / "runs").rglob("report.json")).read_text())
    assert set(report["protocols"]) == {"z/z", "z/SO3"}
    checkpoint = next((tmp_path / "runs").rglob("best.ckpt"))
    assert main(["classify", str(root / ("test" if layout == "train_test" else "") / "torus" / "scan6.off"),
                 "--checkpoint", str(checkpoint), "--top", "2"]) == 0  # fmt: skip
    header, row = (line.split("\t") for line in capsys.readouterr().out.strip().splitlines())
    assert header[:5] == ["path", "label_1", "probability_1", "label_2", "probability_2"]
    assert row[0].endswith("scan6.off") and {row[1], row[3]} <= {"box", "sphere", "torus"} and row[1] != row[3]
    # a file with fewer distinct points than the model's first neighbourhood (8) is refused, named
    np.savetxt(tmp_path / "few.txt", np.random.default_rng(0).normal(size=(5, 3)))
    assert main(["classify", str(tmp_path / "few.txt"), "--checkpoint", str(checkpoint)]) == 1
    assert "few.txt: has 5 distinct points, the model needs at least 8" in capsys.readouterr().out
