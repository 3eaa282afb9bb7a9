"""The `imagefolder` layout: Pillow decoding, resize/crop, both layouts, bad files named, training from the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from aug_attn_tasks.cli import main
from aug_attn_tasks.confusion import read_confusion
from aug_attn_tasks.images.data import ImageDataModule
from aug_attn_tasks.images.folder import ImageDecodeError, imagefolder_classes, load_image, load_imagefolder
from aug_attn_tasks.recipes import load_checkpoint
from pictures import assert_picture
from test_batch_inference import image_folder


def test_load_image_crops_the_centre_or_stretches(tmp_path):
    pixels = np.zeros((20, 40, 3), dtype=np.uint8)
    pixels[:, 10:30] = 255  # a white centre square on a wide black image
    Image.fromarray(pixels).save(tmp_path / "wide.png")
    cropped = load_image(tmp_path / "wide.png", 10)
    stretched = load_image(tmp_path / "wide.png", 10, "stretch")
    assert cropped.shape == stretched.shape == (3, 10, 10) and cropped.dtype == torch.uint8
    assert cropped.float().mean() > 240  # only the centre square is left (edges blurred by bilinear scaling)
    assert stretched[:, :, 0].float().mean() < 5 and stretched[:, :, 5].float().mean() > 250
    Image.fromarray(pixels[..., 0]).save(tmp_path / "gray.jpg")  # grayscale becomes RGB
    assert load_image(tmp_path / "gray.jpg", 8).shape == (3, 8, 8)
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ImageDecodeError, match="bad.jpg: cannot decode image"):
        load_image(tmp_path / "bad.jpg", 8)
    with pytest.raises(ValueError, match="data.resize='squash'"):
        load_image(tmp_path / "wide.png", 8, "squash")


def test_split_folders_and_the_seeded_split(tmp_path):
    for split in ("train", "valid", "test"):
        image_folder(tmp_path / "split" / split, per_class=2)
    (tmp_path / "split" / "train" / "empty").mkdir()  # no images: not a class
    cfg = {"root": str(tmp_path / "split"), "image_size": 12}
    assert imagefolder_classes(cfg) == ["circle", "square", "stripes"]
    splits = load_imagefolder(cfg)
    assert set(splits) == {"train", "val", "test"} and splits["val"][0].shape == (6, 3, 12, 12)
    assert splits["train"][1].tolist() == [0, 0, 1, 1, 2, 2]
    data = ImageDataModule({"dataset": "imagefolder", **cfg})
    data.setup()
    assert len(data.splits["val"]) == 6 and len(data.splits["train"]) == 6  # the valid/ folder, nothing carved

    image_folder(tmp_path / "flat", per_class=5)
    flat = load_imagefolder({"root": str(tmp_path / "flat"), "test_size": 0.4, "split_seed": 1})
    assert len(flat["test"][1]) == 6 and len(flat["train"][1]) == 9 and "val" not in flat
    assert flat["test"][1].tolist() == [0, 0, 1, 1, 2, 2]
    (tmp_path / "flat" / "circle" / "3.png").write_bytes(b"broken")
    with pytest.raises(ImageDecodeError, match=r"circle/3.png"):
        load_imagefolder({"root": str(tmp_path / "flat")})
    with pytest.raises(ValueError, match="differ from the checkpoint"):
        load_imagefolder({"root": str(tmp_path / "split"), "class_names": ["circle", "square"]})


def test_train_the_image_recipe_on_a_folder_of_png_and_jpeg(tmp_path, capsys):
    image_folder(tmp_path / "pictures", per_class=8, size=24)
    args = [
        "train", "aa_resnet_synthetic", "--data.dataset", "imagefolder", "--data.root", str(tmp_path / "pictures"),
        "--data.val_size", "3", "--data.batch_size", "8", "--trainer.max_epochs", "1", "--output.dir", str(tmp_path / "runs"),
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
    ]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "on imagefolder test top-1" in out and "use it: aug-attn classify IMAGE_FILE --checkpoint" in out
    checkpoint = next((tmp_path / "runs").rglob("best.ckpt"))
    module, config = load_checkpoint(checkpoint)
    assert config["data"]["class_names"] == ["circle", "square", "stripes"] and module.class_names == ["circle", "square", "stripes"]
    assert not torch.equal(module.input_std, torch.ones(3))  # the training set's statistics travel with the model
    metrics = json.loads(next((tmp_path / "runs").rglob("test_metrics.json")).read_text())
    assert 0 <= metrics["test/top1"] <= 1
    assert main(["classify", str(tmp_path / "pictures" / "circle"), "--checkpoint", str(checkpoint), "--top", "1"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1 + 8
    names, matrix = read_confusion(checkpoint.parent.parent / "confusion_test.tsv")
    assert names == ["circle", "square", "stripes"] and matrix.sum() == 6  # 2 test images of 8 per class (test_size 0.2)
    assert main(["plot", str(checkpoint.parent.parent)]) == 0
    assert capsys.readouterr().out.split() == ["wrote", str(checkpoint.parent.parent / "curves.png"), "wrote", str(checkpoint.parent.parent / "confusion_test.png")]
    assert_picture(checkpoint.parent.parent / "confusion_test.png")


def test_images_decode_by_bit_depth_orientation_and_format(tmp_path):
    """16-bit grey is scaled (not clipped to white), EXIF orientation is applied, and a file whose
    content is not PNG or JPEG is refused whatever its name."""
    ramp = (np.arange(16, dtype=np.uint16)[None, :].repeat(16, axis=0) * 4369)  # 0 .. 65535
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    grey = load_image(tmp_path / "deep.png", 16, "stretch")[0].float()
    assert grey[0, 0] == 0 and grey[0, -1] == 255 and 100 < grey[0, 8] < 160  # a ramp, not solid white

    tall = np.zeros((20, 10, 3), np.uint8)
    tall[:10] = 255  # white top half
    image = Image.fromarray(tall)
    exif = image.getexif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    image.save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    upright = load_image(tmp_path / "rotated.jpg", 10, "stretch").float().mean(dim=0)
    assert upright[:, 7:].mean() > 200 and upright[:, :3].mean() < 50  # the white half now on the right

    Image.fromarray(np.zeros((8, 8), np.float32)).save(tmp_path / "float.tiff")
    (tmp_path / "float.png").write_bytes((tmp_path / "float.tiff").read_bytes())
    with pytest.raises(ImageDecodeError, match="float.png: cannot decode image"):
        load_image(tmp_path / "float.png", 8)
