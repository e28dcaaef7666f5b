"""Image folders as datasets: layout, splits, resizing, colour, bad folders, and streaming."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from keras_vae.data.datasets import load_dataset
from keras_vae.data.image_folder import scan

RNG = np.random.default_rng(0)


def write_images(folder, count, shape=(12, 10, 3), extension="png", rng=RNG):
    """`count` random uint8 images of `shape` (H, W, C) saved in `folder`; returns them by file name."""
    os.makedirs(folder, exist_ok=True)
    written = {}
    for i in range(count):
        pixels = rng.integers(0, 256, size=shape, dtype=np.uint8)
        image = Image.fromarray(pixels[..., 0] if shape[-1] == 1 else pixels)
        path = os.path.join(folder, f"img_{i:03d}.{extension}")
        image.save(path)
        written[path] = pixels
    return written


@pytest.mark.parametrize("channels, extension", [(1, "png"), (3, "png"), (3, "bmp"), (1, "gif")])
def test_class_subfolders_are_labels_in_sorted_order_and_pixels_are_exact(tmp_path, channels,
                                                                           extension):
    written = {}
    for name, count in (("zebra", 6), ("ant", 5), ("moth", 4)):
        written.update(write_images(tmp_path / name, count, (8, 6, channels), extension))
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "ant" / "readme.md").write_text("not an image either")
    train, test = (scan(str(tmp_path), split) for split in ("train", "test"))
    assert train.class_names == ("ant", "moth", "zebra") and train.image_shape == (8, 6, channels)
    assert len(train) + len(test) == 15 and len(test) == 2  # round(10 % of 15), seeded
    assert not set(train.paths) & set(test.paths)
    for files in (train, test):
        expected_labels = [("ant", "moth", "zebra").index(os.path.basename(os.path.dirname(p)))
                           for p in files.paths]
        np.testing.assert_array_equal(files.labels, expected_labels)
        images = files.read()
        assert images.dtype == np.float32 and images.shape == (len(files), 8, 6, channels)
        for path, image in zip(files.paths, images):  # lossless formats: k / 255 exactly
            np.testing.assert_array_equal(image, written[path].reshape(8, 6, channels) / np.float32(255))
    data = load_dataset(str(tmp_path), "train")
    np.testing.assert_array_equal(data.labels, train.labels)
    np.testing.assert_array_equal(data.images, train.read())


def test_a_flat_folder_has_no_labels_and_a_fixed_seeded_split(tmp_path):
    write_images(tmp_path, 30, (4, 4, 3))
    train, test = scan(str(tmp_path), "train"), scan(str(tmp_path), "test")
    assert train.labels is None and test.labels is None and len(test) == 3 and len(train) == 27
    assert sorted(train.paths + test.paths) == sorted(str(p) for p in tmp_path.iterdir())
    assert scan(str(tmp_path), "test").paths == test.paths  # the same split every time
    assert load_dataset(str(tmp_path), "test").labels is None


def test_train_and_test_subfolders_are_the_splits(tmp_path):
    write_images(tmp_path / "train" / "a", 3, (4, 4, 1))
    write_images(tmp_path / "train" / "b", 2, (4, 4, 1))
    write_images(tmp_path / "test" / "a", 1, (4, 4, 1))
    write_images(tmp_path / "test" / "b", 1, (4, 4, 1))
    train, test = scan(str(tmp_path), "train"), scan(str(tmp_path), "test")
    assert len(train) == 5 and len(test) == 2
    assert all("/train/" in p for p in train.paths) and all("/test/" in p for p in test.paths)
    np.testing.assert_array_equal(train.labels, [0, 0, 0, 1, 1])
    np.testing.assert_array_equal(test.labels, [0, 1])


def test_image_size_centre_crops_to_the_aspect_ratio_then_resizes(tmp_path):
    wide = np.zeros((20, 40, 3), np.uint8)
    wide[:, :10] = (255, 0, 0)  # the left and right quarters fall outside a centred square crop
    wide[:, 10:30] = (0, 255, 0)
    wide[:, 30:] = (0, 0, 255)
    Image.fromarray(wide).save(tmp_path / "wide.png")
    tall = np.zeros((30, 10, 3), np.uint8)
    tall[10:20] = (0, 255, 0)  # a 10x10 centre crop of a tall image is its middle third
    tall[:10] = tall[20:] = (255, 255, 255)
    Image.fromarray(tall).save(tmp_path / "tall.png")
    # Mixed sizes are fine once resized; the two files fall one in each split.
    images = np.concatenate([scan(str(tmp_path), split, image_size=(5, 5)).read()
                             for split in ("train", "test")])
    assert images.shape == (2, 5, 5, 3)
    np.testing.assert_allclose(images, np.broadcast_to([0.0, 1.0, 0.0], images.shape), atol=1e-6)
    # A non-square target keeps its own aspect ratio: 20x40 to 4x8 is a plain shrink.
    whole = scan(str(tmp_path), "train", image_size=(4, 8))
    for path, image in zip(whole.paths, whole.read()):
        if path.endswith("wide.png"):
            assert image[:, 0, 0].min() > 0.9 and image[:, -1, 2].min() > 0.9


def test_color_mode_converts_every_file(tmp_path):
    rgb = RNG.integers(0, 256, size=(6, 6, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    Image.fromarray(rgb[..., 0]).save(tmp_path / "b.png")
    with pytest.raises(ValueError, match=r"b\.png has 1 channel\(s\) but .*a\.png has 3.*--color-mode"):
        scan(str(tmp_path), "train")
    grey = load_dataset(str(tmp_path), "train", color_mode="grayscale").images
    assert grey.shape[-1] == 1
    grey_all = np.concatenate([grey, load_dataset(str(tmp_path), "test", color_mode="grayscale").images])
    # ITU-R 601-2 luma, as Pillow's "L" conversion defines it (rounded).
    wide = rgb.astype(np.float64)
    luma = (wide[..., 0] * 299 + wide[..., 1] * 587 + wide[..., 2] * 114) / 1000.0
    assert any(np.abs(image[..., 0] * 255 - luma).max() <= 1.0 for image in grey_all)
    coloured = load_dataset(str(tmp_path), "train", color_mode="rgb").images
    assert coloured.shape[-1] == 3


def test_bad_folders_are_clear_errors_naming_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="No such image folder"):
        scan(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="holds no images"):
        scan(str(tmp_path / "empty"))

    write_images(tmp_path / "corrupt", 4, (5, 5, 3))
    (tmp_path / "corrupt" / "broken.png").write_bytes(b"this is not a PNG")
    with pytest.raises(ValueError, match=r"1 of \d+ files cannot be read as images: .*broken\.png"):
        for split in ("train", "test"):
            scan(str(tmp_path / "corrupt"), split)

    write_images(tmp_path / "mixed", 3, (5, 5, 3))
    Image.fromarray(np.zeros((7, 5, 3), np.uint8)).save(tmp_path / "mixed" / "odd.png")
    with pytest.raises(ValueError, match=r"odd\.png is 7x5 \(HxW\) but .* is 5x5: .*--image-size"):
        for split in ("train", "test"):
            scan(str(tmp_path / "mixed"), split)

    # A valid header over truncated pixel data is found when the file is decoded.
    write_images(tmp_path / "truncated", 3, (64, 64, 3))
    path = tmp_path / "truncated" / "img_000.png"
    path.write_bytes(path.read_bytes()[:200])
    files = [scan(str(tmp_path / "truncated"), split) for split in ("train", "test")]
    (holding,) = [f for f in files if str(path) in f.paths]
    with pytest.raises(ValueError, match=r"img_000\.png: cannot decode the image"):
        holding.read()


def test_the_train_command_reports_a_bad_folder_without_a_traceback(tmp_path):
    write_images(tmp_path / "mixed", 3, (5, 5, 1))
    Image.fromarray(np.zeros((6, 5), np.uint8)).save(tmp_path / "mixed" / "odd.png")
    result = subprocess.run(
        [sys.executable, "-m", "keras_vae", "train", "--dataset", str(tmp_path / "mixed"),
         "--out", str(tmp_path / "run"), "--epochs", "1"],
        capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "error:" in result.stderr and "odd.png" in result.stderr and "--image-size" in result.stderr
    assert "Traceback" not in result.stderr


STREAM_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    from keras_vae.training.run import TrainConfig
    from keras_vae.training.inputs import load_training_data

    def peak_kb():  # VmHWM: the process's peak resident memory
        with open("/proc/self/status") as f:
            return int(next(line for line in f if line.startswith("VmHWM")).split()[1])

    folder, budget_mb = sys.argv[1], float(sys.argv[2])
    config = TrainConfig(dataset=folder, memory_budget_mb=budget_mb, batch_size=32,
                         val_fraction=0.0, out="unused")
    before = peak_kb()
    x_train, _ = load_training_data(config)
    assert not isinstance(x_train, np.ndarray), "a folder beyond the budget must stream"
    total, seen = 0.0, 0
    for epoch in range(2):
        for index in range(len(x_train)):
            (batch,) = x_train[index]
            total += float(batch.sum())
            seen += len(batch)
        x_train.on_epoch_end()
    print(x_train.files.decoded_bytes, seen, (peak_kb() - before) * 1024)
""")


def test_a_folder_four_times_the_memory_budget_streams_within_it(tmp_path):
    budget_mb = 50
    shape = (128, 128, 3)
    # The training split (90 % of the files), decoded as float32, is 4x the budget.
    count = int(4 * budget_mb * 1e6 / (np.prod(shape) * 4) / 0.9) + 2
    ramp = np.linspace(0, 255, 128, dtype=np.float32)
    for i in range(count):  # smooth pictures: small files, quick to write and read
        pixels = (ramp[:, None, None] + ramp[None, :, None] * (i % 7) / 7 + i) % 256
        Image.fromarray(np.broadcast_to(pixels, shape).astype(np.uint8)).save(tmp_path / f"{i:04d}.png")
    result = subprocess.run([sys.executable, "-c", STREAM_SCRIPT, str(tmp_path), str(budget_mb)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    decoded_bytes, seen, growth = map(int, result.stdout.split()[-3:])
    assert decoded_bytes > 4 * budget_mb * 1e6
    assert seen == 2 * len(scan(str(tmp_path), "train"))
    assert growth < budget_mb * 1e6, f"peak memory grew by {growth / 1e6:.0f} MB"
    print(f"decoded {decoded_bytes / 1e6:.0f} MB, peak memory grew by {growth / 1e6:.1f} MB")


def test_coloured_mnist_is_a_seeded_labelled_folder_of_tinted_digits(tmp_path):
    from keras_vae.data.coloured_mnist import build_coloured_mnist

    digits = np.zeros((6, 28, 28), np.uint8)
    digits[3:] = 255  # a solid 28x28 block: all foreground
    labels = np.array([0, 1, 2, 0, 1, 2])
    np.savez(tmp_path / "mnist.npz", x_train=digits, y_train=labels, x_test=digits[:2],
             y_test=labels[:2])
    counts = build_coloured_mnist(str(tmp_path / "mnist.npz"), str(tmp_path / "cm"), seed=3)
    assert counts == {"train": 6, "test": 2}
    train = scan(str(tmp_path / "cm"), "train")
    assert train.class_names == ("0", "1", "2") and train.image_shape == (32, 32, 3)
    np.testing.assert_array_equal(train.labels, [0, 0, 1, 1, 2, 2])
    images = np.rint(train.read() * 255).astype(int)
    for path, image in zip(train.paths, images):
        index = int(os.path.basename(path)[:-4])
        if index < 3:
            background = image[0, 0]  # a blank digit: the background everywhere, each channel in [0, 127]
            assert (image == background).all() and background.max() <= 127
            continue
        foreground = image[(image >= 128).all(axis=-1)]
        assert len(foreground) == 28 * 28 and (foreground == foreground[0]).all()
        rows, cols = np.nonzero((image >= 128).all(axis=-1))
        assert rows.max() - rows.min() == 27 and cols.max() - cols.min() == 27
        assert 0 <= rows.min() <= 4 and 0 <= cols.min() <= 4
    with pytest.raises(FileExistsError):
        build_coloured_mnist(str(tmp_path / "mnist.npz"), str(tmp_path / "cm"))
    build_coloured_mnist(str(tmp_path / "mnist.npz"), str(tmp_path / "again"), seed=3)
    for path in train.paths:
        twin = path.replace(str(tmp_path / "cm"), str(tmp_path / "again"))
        assert open(path, "rb").read() == open(twin, "rb").read()


def labelled_folder(root, channels, per_class=20, size=16):
    """Three classes of blurry blobs (grey or coloured) in class subfolders: a learnable folder."""
    rng = np.random.default_rng(channels)
    grid = np.linspace(-1, 1, size)
    for label, centre in enumerate((-0.5, 0.0, 0.5)):
        os.makedirs(os.path.join(root, f"class_{label}"), exist_ok=True)
        for i in range(per_class):
            blob = np.exp(-((grid[:, None] - centre) ** 2 + (grid[None, :] - rng.normal(0, 0.3)) ** 2) * 4)
            colour = rng.uniform(0.3, 1.0, size=channels)
            pixels = np.rint(255 * blob[..., None] * colour).astype(np.uint8)
            Image.fromarray(pixels[..., 0] if channels == 1 else pixels).save(
                os.path.join(root, f"class_{label}", f"{i:02d}.png"))
    return str(root)


def test_an_interrupted_streamed_grey_folder_run_resumes_and_evaluates(tmp_path):
    import json

    import keras

    from keras_vae.evaluation.evaluate import evaluate_run
    from keras_vae.training.run import TrainConfig
    from keras_vae.training.run import train

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:
                raise KeyboardInterrupt

    folder = labelled_folder(tmp_path / "blobs", channels=1)
    config = TrainConfig(dataset=folder, memory_budget_mb=0, out=str(tmp_path / "run"), epochs=2,
                         batch_size=16, latent_dim=2, architecture="conv", conv_filters=(4, 8),
                         dynamic_binarization=True, verbose=0)
    with pytest.raises(KeyboardInterrupt):
        train(config, extra_callbacks=[Interrupt()])
    vae = train(config)  # the same command again
    with open(os.path.join(config.out, "history.csv")) as f:
        assert [line.split(",")[0] for line in f.read().split()[1:]] == ["0", "1"]
    assert vae.image_shape == (16, 16, 1)
    # 54 training images (60 less the 6 of the test split), 5 held out: 4 batches of 16 per epoch.
    assert int(keras.ops.convert_to_numpy(vae.optimizer.iterations)) == 2 * 4
    metrics = evaluate_run(config.out, num_samples=5, verbose=False)
    with open(os.path.join(config.out, "config.json")) as f:
        assert json.load(f)["image_shape"] == [16, 16, 1]
    assert metrics["num_images"] == 6 and metrics["test_binarized"]
    assert metrics["bits_per_dim"] == pytest.approx(metrics["nll"] / (16 * 16 * np.log(2)))


@pytest.mark.slow
def test_an_rgb_folder_trains_evaluates_in_bits_per_dim_exports_and_serves(tmp_path):
    import json

    from helpers.processes import run_python

    from keras_vae.serving.likelihood import onnx_log_likelihood
    from keras_vae.serving.encoder import Encoder
    from keras_vae.serving.explorer.page import explorer_config
    from keras_vae.serving.sampler import Sampler

    folder = labelled_folder(tmp_path / "blobs", channels=3)
    run = str(tmp_path / "run")
    run_python(["-m", "keras_vae", "train", "--dataset", folder, "--architecture", "conv",
                "--conv-filters", "8", "16", "--latent-dim", "4", "--epochs", "2",
                "--batch-size", "16", "--quiet", "--out", run,
                "--likelihood", "discretized_logistic", "--conv-upsampling", "subpixel"], "jax")
    evaluated = run_python(["-m", "keras_vae", "evaluate", run, "--num-samples", "20"], "jax")
    with open(os.path.join(run, "metrics.json")) as f:
        metrics = json.load(f)
    assert metrics["num_images"] == 6 and "bits/dim" in evaluated.stdout
    assert metrics["bits_per_dim"] == pytest.approx(metrics["nll"] / (16 * 16 * 3 * np.log(2)))
    for picture in ("test_reconstructions.png", "test_samples.png", "latent_space.png",
                    "interpolation.png"):
        assert os.path.exists(os.path.join(run, picture)), picture

    decoder_path, encoder_path = os.path.join(run, "decoder.onnx"), os.path.join(run, "encoder.onnx")
    run_python(["-m", "keras_vae", "export", run, "--out", decoder_path, "--encoder-out",
                encoder_path])
    sampler, encoder = Sampler(decoder_path, provider="cpu"), Encoder(encoder_path, provider="cpu")
    assert sampler.likelihood == "discretized_logistic"
    images = sampler.sample(5, seed=0)
    assert images.shape == (5, 16, 16, 3) and 0 <= images.min() and images.max() <= 1
    # The exported files score the test split as Keras did: the same estimator and noise.
    test = load_dataset(folder, "test").images
    nll = -onnx_log_likelihood(encoder, sampler, test, num_samples=20, seed=0).mean()
    assert nll == pytest.approx(metrics["nll"], rel=1e-3)
    assert explorer_config(sampler, encoder=True, ort=False, server=False)["image_shape"] == [16, 16, 3]

    int8 = run_python(["-m", "keras_vae", "export", run, "--precision", "int8", "--out",
                       os.path.join(run, "decoder.int8.onnx")], check=False)
    assert int8.returncode != 0 and "int8 export is for Bernoulli and Gaussian" in int8.stderr
    assert "Traceback" not in int8.stderr


def test_each_process_decodes_only_its_files_of_each_streamed_batch(tmp_path):
    from keras_vae.data.batches import ImageFolderBatches

    from keras_vae.data.datasets import image_folder_split

    write_images(tmp_path / "imgs", 12, (4, 4, 1))
    files = image_folder_split(str(tmp_path / "imgs"), "train", None, "auto")
    whole = ImageFolderBatches(files, 4, shuffle=True, seed=1, drop_last=True)
    parts = [ImageFolderBatches(files, 4, shuffle=True, seed=1, drop_last=True,
                                process_index=p, num_processes=2) for p in (0, 1)]
    for i in range(len(whole)):
        joined = np.concatenate([parts[0][i][0], parts[1][i][0]])
        np.testing.assert_array_equal(joined, whole[i][0])
