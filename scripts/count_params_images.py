"""Print parameter counts of the image models next to the published ones (no forward pass, a few seconds).

Published: Zagoruyko & Komodakis 2016 (WRN-28-10, CIFAR-10), Bello et al. 2019 (CIFAR-100 WRN-28-10 and
ImageNet ResNet-50, plain and augmented), He et al. 2016 / torchvision (ResNet-18/34/50, 1000 classes).

Run: ``python scripts/count_params_images.py``
"""

from __future__ import annotations

from aug_attn.models import count_parameters, resnet18, resnet34, resnet50, wrn28_10

ROWS = [
    ("WRN-28-10, CIFAR-10", lambda: wrn28_10(10), "36.5M (Zagoruyko)"),
    ("WRN-28-10, CIFAR-100", lambda: wrn28_10(100), "36.3M (Bello)"),
    ("AA-WRN-28-10, CIFAR-100", lambda: wrn28_10(100, attention=True), "36.2M (Bello)"),
    ("ResNet-18, ImageNet", lambda: resnet18(), "11.7M"),
    ("ResNet-34, ImageNet", lambda: resnet34(), "21.8M"),
    ("ResNet-50, ImageNet", lambda: resnet50(), "25.6M (Bello, He)"),
    ("AA-ResNet-50 (stages 2-4), ImageNet", lambda: resnet50(attention=True, attention_stages=(2, 3, 4)), "25.8M (Bello)"),
    ("AA-ResNet-50 (all stages), ImageNet", lambda: resnet50(attention=True), "-"),
]


def main() -> None:
    print("| model | ours | published |\n|---|---:|---:|")
    for name, build, published in ROWS:
        count = count_parameters(build())
        print(f"| {name} | {count:,} ({count / 1e6:.2f}M) | {published} |")


if __name__ == "__main__":
    main()
