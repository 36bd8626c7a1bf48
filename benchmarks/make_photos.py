"""Build the held-out photo set: public sample photographs, centre-cropped and downscaled to 32×32.

    python benchmarks/make_photos.py --foolbox-wheel foolbox-3.3.4-py3-none-any.whl

Sources (read locally, nothing downloaded by this script): the photographs shipped inside the
installed scikit-image wheel (``skimage/data/*.png|jpg``, no pooch fetches) and the 20 ImageNet
JPEGs inside the foolbox 3.3.4 wheel (MIT; get it with ``pip download --no-deps foolbox==3.3.4``,
the wheel is read as a zip, foolbox is not installed). Each image is centre-cropped to a square,
downscaled with a Lanczos filter to 32×32 RGB (greyscale sources are replicated to three
channels) and written as ``benchmarks/photos/<name>.png``; ``ATTRIBUTION.md`` there says where
each came from. Which photos were used for tuning is declared in ``benchmarks/photos/TUNING``.
"""

from __future__ import annotations

import argparse
import io
import zipfile
from pathlib import Path

from PIL import Image

OUT = Path(__file__).resolve().parent / "photos"
SIDE = 32
# scikit-image's bundled photographs (not synthetic test patterns, text pages or microscopy masks).
# File -> licence, as scikit-image's docstrings state it (photos without a stated licence left out).
SKIMAGE_PHOTOS = {
    "astronaut.png": "public domain (NASA)",
    "coffee.png": "CC0 (Rachel Michetti)",
    "chelsea.png": "CC0 (Stefan van der Walt)",
    "rocket.jpg": "public domain (SpaceX)",
    "camera.png": "CC0 (Lav Varshney)",
    "hubble_deep_field.jpg": "public domain (NASA)",
    "retina.jpg": "CC0 (Mikael Häggström)",
    "coins.png": "no known copyright restrictions (Brooklyn Museum)",
    "grass.png": "CC0 (linolafett, DeviantArt)",
    "gravel.png": "CC0 (CC0Textures)",
    "brick.png": "CC0 (CC0Textures)",
}


def to_thumbnail(image: Image.Image) -> Image.Image:
    """Centre square crop, Lanczos downscale to SIDE×SIDE, RGB."""
    image = image.convert("RGB")
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    return image.crop((left, top, left + side, top + side)).resize((SIDE, SIDE), Image.LANCZOS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--foolbox-wheel", type=Path, required=True)
    args = parser.parse_args()
    import skimage

    OUT.mkdir(exist_ok=True)
    lines = [
        "# Held-out photos (32×32 crops)",
        "",
        "Made by `benchmarks/make_photos.py`: centre square crop, Lanczos downscale to 32×32 RGB.",
        "",
        "| file | source | licence |",
        "|---|---|---|",
    ]
    data = Path(skimage.__file__).parent / "data"
    for name, licence in SKIMAGE_PHOTOS.items():
        stem = "skimage_" + name.rsplit(".", 1)[0]
        to_thumbnail(Image.open(data / name)).save(OUT / f"{stem}.png")
        lines.append(
            f"| {stem}.png | scikit-image {skimage.__version__} wheel, `skimage/data/{name}` | {licence} |"
        )
    with zipfile.ZipFile(args.foolbox_wheel) as wheel:
        for member in sorted(n for n in wheel.namelist() if n.startswith("foolbox/data/imagenet_")):
            stem = Path(member).stem
            image = Image.open(io.BytesIO(wheel.read(member)))
            to_thumbnail(image).save(OUT / f"{stem}.png")
            lines.append(f"| {stem}.png | foolbox 3.3.4 wheel `{member}` (ImageNet validation sample; class id after the index) | foolbox: MIT; image from ImageNet |")
    (OUT / "ATTRIBUTION.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {len(lines) - 6} photos to {OUT}")


if __name__ == "__main__":
    main()
