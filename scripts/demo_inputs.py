"""Write one input file per task, drawn by the synthetic generators with seeds no demo config trains on,
for trying ``aug-attn tag|classify|explain`` on files: ``song.wav`` (a 4 s clip at 16 kHz with at
least three tags),
``image.png`` (a 32x32 synthetic image, class in the file name's stem) and ``torus.npy`` (2,048
points with normals, ``x y z nx ny nz``).

Usage: ``python scripts/demo_inputs.py OUT_DIR [--seed 99]``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import soundfile as sf
from PIL import Image

from aug_attn_tasks.audio.synthetic import SYNTHETIC_TAGS, synthetic_clip
from aug_attn_tasks.images.synthetic import SYNTHETIC_CLASSES, synthetic_images
from aug_attn_tasks.points.synthetic import SHAPES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--seed", type=int, default=99)
    args = parser.parse_args()
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # the first clip of the seed with at least three tags: a picture with several sounds to attend to
    wave, tags = next(c for c in (synthetic_clip(args.seed, i, seconds=4.0, sample_rate=16000) for i in range(100)) if c[1].sum() >= 3)
    sf.write(out / "song.wav", wave, 16000)
    images, labels = synthetic_images(1, args.seed)
    image_path = out / f"image_{SYNTHETIC_CLASSES[int(labels[0])]}.png"
    Image.fromarray(images[0].permute(1, 2, 0).numpy()).save(image_path)
    pos, normal = SHAPES["torus"](np.random.default_rng(args.seed), 2048)
    np.save(out / "torus.npy", np.hstack([pos, normal]).astype(np.float32))
    names = [SYNTHETIC_TAGS[i] for i in np.flatnonzero(tags)]
    print(f"wrote {out / 'song.wav'} (tags: {', '.join(names)}), {image_path}, {out / 'torus.npy'}")


if __name__ == "__main__":
    main()
