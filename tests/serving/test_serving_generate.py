"""Tests for the keras_vae.serving.generate command line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from helpers.onnx_fixtures import make_decoder_onnx, reference_decode
from PIL import Image

from keras_vae.serving.generate import main

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return make_decoder_onnx(tmp_path_factory.mktemp("model") / "decoder.onnx")


@pytest.fixture(scope="module")
def rgb_model(tmp_path_factory):
    return make_decoder_onnx(tmp_path_factory.mktemp("rgb") / "decoder.onnx",
                             latent_dim=3, image_shape=(5, 6, 3), likelihood="gaussian")


def _latents(seed, n, dim, temperature=1.0):
    """The latents the CLI should draw: z ~ N(0, T^2 I) from default_rng(seed)."""
    z = np.random.default_rng(seed).standard_normal((n, dim), dtype=np.float32)
    return z * np.float32(temperature)


def _cli(*args, cwd=REPO, script=False):
    entry = ["-m", "keras_vae", "generate"] if script else ["-m", "keras_vae.serving.generate"]
    return subprocess.run([sys.executable, *entry, *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=60)


def test_keras_vae_command_and_module_runs_are_byte_identical(model, tmp_path):
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    run_a = _cli(model, "-n", 12, "--seed", 0, "--out", a, script=True)
    run_b = _cli(model, "-n", 12, "--seed", 0, "--out", b)
    assert run_a.returncode == 0, run_a.stderr
    assert run_b.returncode == 0, run_b.stderr
    assert a.read_bytes() == b.read_bytes()
    assert "provider: CPUExecutionProvider" in run_a.stdout
    assert "images/s" in run_a.stdout


def test_help_has_examples():
    out = _cli("--help")
    assert out.returncode == 0
    assert "examples:" in out.stdout and "--seed 0 --out samples.png" in out.stdout


def test_png_grid_matches_reference_decoder(model, tmp_path, capsys):
    out = tmp_path / "s.png"
    assert main([str(model), "-n", "10", "--seed", "5", "--ncols", "4", "--out", str(out)]) == 0
    with Image.open(out) as img:
        assert img.mode == "L"
        assert img.size == (4 * 9 + 1, 3 * 9 + 1)  # 4 columns, 3 rows of 8x8 plus padding
        pixels = np.asarray(img)
    expected = np.rint(reference_decode(model, _latents(5, 10, 4)) * 255)
    for i in range(10):
        r, c = divmod(i, 4)
        tile = pixels[1 + 9 * r : 9 + 9 * r, 1 + 9 * c : 9 + 9 * c]
        assert np.abs(tile.astype(int) - expected[i, ..., 0]).max() <= 1
    assert (pixels[19:27, 19:] == 0).all()  # empty cells of the last row


def test_different_seeds_differ(model, tmp_path):
    for seed in (1, 2):
        assert main([str(model), "-n", "4", "--seed", str(seed),
                     "--out", str(tmp_path / f"{seed}.png")]) == 0
    assert (tmp_path / "1.png").read_bytes() != (tmp_path / "2.png").read_bytes()


def test_npy_output_and_rgb_png(rgb_model, tmp_path):
    npy, png = tmp_path / "x.npy", tmp_path / "x.png"
    assert main([str(rgb_model), "-n", "7", "--seed", "3", "--temperature", "0.5",
                 "--npy", str(npy), "--out", str(png)]) == 0
    x = np.load(npy)
    assert x.dtype == np.float32 and x.shape == (7, 5, 6, 3)
    np.testing.assert_allclose(x, reference_decode(rgb_model, _latents(3, 7, 3, 0.5)),
                               rtol=1e-5, atol=1e-5)
    with Image.open(png) as img:
        assert img.mode == "RGB" and img.size == (3 * 7 + 1, 3 * 6 + 1)
        # Gaussian means are clipped to [0, 1] in the picture
        tile = np.asarray(img)[1:6, 1:7].astype(int)
    assert np.abs(tile - np.rint(np.clip(x[0], 0, 1) * 255)).max() <= 1


def test_decode_given_latents(model, tmp_path):
    z = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float64)
    np.save(tmp_path / "z.npy", z)
    out = tmp_path / "x.npy"
    assert main([str(model), "--z", str(tmp_path / "z.npy"), "--batch-size", "2",
                 "--npy", str(out)]) == 0
    np.testing.assert_allclose(np.load(out), reference_decode(model, z), rtol=1e-5, atol=1e-6)


def _bad_inputs(tmp):
    """(argv, stderr fragment) pairs that must fail; ``M`` stands for the model path."""
    np.save(tmp / "z_wrong.npy", np.zeros((3, 5)))
    np.save(tmp / "z_nan.npy", np.full((2, 4), np.nan))
    np.save(tmp / "z_empty.npy", np.zeros((0, 4)))
    (tmp / "not.npy").write_bytes(b"plain text")
    (tmp / "garbage.onnx").write_bytes(b"not onnx")
    (tmp / "a_dir").mkdir()
    out = str(tmp / "out.png")
    cases = [
        (["M", "-n", "0", "--out", out], "-n must be a positive integer"),
        (["M", "-n", "-3", "--out", out], "-n must be a positive integer"),
        (["M", "-n", "4"], "nothing to write"),
        (["M", "-n", "4", "--out", str(tmp / "images.npy")], "use --npy"),
        (["M", "--seed", "-1", "--out", out], "--seed must be >= 0"),
        (["M", "--temperature", "-1", "--out", out], "--temperature"),
        (["M", "--temperature", "nan", "--out", out], "--temperature"),
        (["M", "--batch-size", "0", "--out", out], "--batch-size"),
        (["M", "--ncols", "0", "--out", out], "--ncols"),
        (["M", "--out", str(tmp / "missing_dir" / "x.png")], "directory does not exist"),
        (["M", "--out", str(tmp / "a_dir")], "is a directory"),
        (["M", "--z", str(tmp / "z_wrong.npy"), "--out", out], "got shape [3, 5]"),
        (["M", "--z", str(tmp / "z_nan.npy"), "--out", out], "NaN or inf"),
        (["M", "--z", str(tmp / "z_empty.npy"), "--out", out], "no rows"),
        (["M", "--z", str(tmp / "not.npy"), "--out", out], "not a .npy file"),
        (["M", "--z", str(tmp / "absent.npy"), "--out", out], "latents file not found"),
        (["M", "--z", str(tmp / "z_wrong.npy"), "-n", "3", "--out", out], "cannot be combined"),
        ([str(tmp / "absent.onnx"), "--out", out], "model file not found"),
        ([str(tmp / "garbage.onnx"), "--out", out], "cannot load"),
    ]
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        cases.append((["M", "--provider", "cuda", "--out", out], "CUDAExecutionProvider"))
    return cases


def test_bad_inputs_fail_cleanly(model, tmp_path, capsys):
    cases = _bad_inputs(tmp_path)
    before = sorted(os.listdir(tmp_path))
    for argv, fragment in cases:
        argv = [str(model) if a == "M" else a for a in argv]
        status = main(argv)
        err = capsys.readouterr().err
        assert status != 0, argv
        assert fragment in err, (argv, err)
        assert err.count("\n") == 1 and "Traceback" not in err, err
        assert sorted(os.listdir(tmp_path)) == before, argv  # nothing written, no temp files


def test_argument_errors_are_one_line(model, capsys):
    for argv in ([str(model), "-n", "abc", "--out", "x.png"], [str(model), "--provider", "tpu"],
                 [str(model), "--bogus"]):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "error:" in err


def test_failure_in_subprocess_has_no_traceback(tmp_path):
    out = tmp_path / "x.png"
    run = _cli(tmp_path / "absent.onnx", "-n", 2, "--out", out)
    assert run.returncode == 1
    assert run.stderr.strip().startswith("keras-vae generate: error: model file not found")
    assert "Traceback" not in run.stderr and not out.exists()
