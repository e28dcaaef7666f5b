"""Build photo patches (32x32 RGB crops of natural photos that ship inside installed packages).

The photos are scikit-image's astronaut, coffee, chelsea, rocket, retina,
immunohistochemistry, hubble_deep_field and both stereo_motorcycle views, and matplotlib's
grace_hopper.jpg: all in the packages, no network. Test crops come from the right 20 % of
each photo, training crops from the rest (keras_vae.data.photo_patches says how), written as
OUT/train/ and OUT/test/, which `keras-vae train --dataset OUT` reads as unlabelled splits.
It prints PNG's lossless size of the test crops in bits/dim: the baseline to beat.

examples:
  python benchmarks/make_photo_patches.py data/photo_patches
  keras-vae train --dataset data/photo_patches --likelihood discretized_logistic \\
      --architecture conv --out runs/photos
"""

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from keras_vae.data.image_folder import list_images  # noqa: E402
from keras_vae.data.photo_patches import build_photo_patches, png_bits_per_dim  # noqa: E402

SKIMAGE_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "retina", "immunohistochemistry",
                  "hubble_deep_field")


def installed_photos():
    """{name: uint8 (H, W, 3)} of the photos above; ImportError names a missing package."""
    import matplotlib
    from PIL import Image
    from skimage import data

    photos = {name: getattr(data, name)() for name in SKIMAGE_PHOTOS}
    left, right, _ = data.stereo_motorcycle()
    photos.update(motorcycle_left=left, motorcycle_right=right)
    path = os.path.join(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg")
    photos["grace_hopper"] = np.asarray(Image.open(path).convert("RGB"))
    return {name: np.ascontiguousarray(photo[..., :3], dtype=np.uint8) for name, photo in photos.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", help="folder to create (must not exist)")
    parser.add_argument("--train-stride", type=int, default=8,
                        help="pixels between training crops (default: 8; 32 = no overlap)")
    args = parser.parse_args(argv)
    if args.train_stride < 1:
        parser.error("--train-stride must be at least 1")
    started = time.perf_counter()
    try:
        photos = installed_photos()
        counts = build_photo_patches(photos, args.out, train_stride=args.train_stride)
    except ImportError as error:
        sys.exit(f"error: {error}; install the benchmarks extra: pip install '.[benchmarks]'")
    except (FileExistsError, ValueError) as error:
        sys.exit(f"error: {error}")
    from PIL import Image

    test_paths, _, _ = list_images(os.path.join(args.out, "test"))
    test = np.stack([np.asarray(Image.open(path)) for path in test_paths])
    whole, idat = png_bits_per_dim(test)
    print(f"Wrote {counts['train']} training and {counts['test']} test crops of {len(photos)} "
          f"photos to {args.out} in {time.perf_counter() - started:.0f} s")
    print("\n| test crops | PNG, whole files | PNG, image data only |\n|---|---:|---:|")
    print(f"| {len(test)} × 32×32×3 | {whole:.3f} bits/dim | {idat:.3f} bits/dim |")


if __name__ == "__main__":
    main()
