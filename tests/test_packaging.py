"""The package as users install it: one namespace, layers that install apart, a wheel that serves.

A wheel is built from this checkout and installed, with only the ``serving`` extra,
into a fresh virtual environment. There:

* Keras (and every other deep-learning framework) is not importable;
* ``import keras_vae`` works from a directory holding ``serving/`` and ``serving.py``;
* ``keras-vae serve decoder.onnx`` answers ``/v1/generate`` and serves the explorer,
  whose npm assets it finds through ``KERAS_VAE_NODE_MODULES``;
* ``keras-vae explore`` writes the static site, and ``keras-vae train`` says which
  extra it needs.
"""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest

from helpers.onnx_fixtures import make_decoder_onnx
from helpers.onnx_fixtures import make_encoder_onnx

REPO = Path(__file__).resolve().parent.parent

SERVING_MODULE_MAX_LINES = 250


def test_no_module_of_the_serving_package_is_over_250_lines():
    sizes = {path.relative_to(REPO): len(path.read_text().splitlines())
             for path in (REPO / "keras_vae" / "serving").rglob("*.py")}
    assert len(sizes) > 10
    too_long = {str(path): n for path, n in sizes.items() if n > SERVING_MODULE_MAX_LINES}
    assert not too_long, f"over {SERVING_MODULE_MAX_LINES} lines: {too_long}"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out),
                    str(REPO)], check=True, capture_output=True, text=True, timeout=300)
    (path,) = out.glob("keras_vae-*.whl")
    return path


@pytest.mark.slow
def test_every_top_level_name_in_the_wheel_starts_with_keras_vae(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        top_level = {name.split("/")[0] for name in names}
        (info,) = {name for name in top_level if name.endswith(".dist-info")}
        declared = archive.read(f"{info}/top_level.txt").decode().split() if (
            f"{info}/top_level.txt" in names) else []
        entry_points = archive.read(f"{info}/entry_points.txt").decode()
    assert all(name.startswith("keras_vae") for name in top_level), top_level
    assert all(name.startswith("keras_vae") for name in declared), declared
    assert "keras-vae = keras_vae.cli:main" in entry_points
    # The explorer's own files ship in the wheel.
    assert any(name.startswith("keras_vae/serving/explorer/static/index.html") for name in names)


@pytest.fixture(scope="module")
def serving_venv(wheel, tmp_path_factory) -> Path:
    """A fresh virtual environment with the wheel and only its serving extra."""
    venv = tmp_path_factory.mktemp("serving-venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
                    "--disable-pip-version-check", "-c", str(REPO / "constraints.txt"),
                    f"{wheel}[serving]"], check=True, capture_output=True, text=True, timeout=900)
    return venv


def run_in(venv: Path, code: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(venv / "bin" / "python"), "-c", code], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_the_serving_install_has_no_deep_learning_framework(serving_venv, tmp_path):
    for package in ("keras", "tensorflow", "jax", "torch", "sklearn", "matplotlib"):
        result = run_in(serving_venv, f"import {package}", tmp_path)
        assert result.returncode != 0 and "ModuleNotFoundError" in result.stderr, package


@pytest.mark.slow
def test_import_keras_vae_beside_a_serving_folder_and_script(serving_venv, tmp_path):
    (tmp_path / "serving").mkdir()
    (tmp_path / "serving" / "__init__.py").write_text("raise ImportError('the user folder')\n")
    (tmp_path / "serving.py").write_text("raise ImportError('the user script')\n")
    code = ("import keras_vae, keras_vae.core.contract, keras_vae.serving.app, keras_vae.cli\n"
            "import sys; print(keras_vae.__version__, 'keras' in sys.modules)")
    result = run_in(serving_venv, code, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["0.1.0", "False"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> tuple[int, bytes, dict]:
    request = urllib.request.Request(url)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, error.read(), dict(error.headers)


def _post_json(url: str, body: dict) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status, response.read()


@pytest.mark.slow
def test_keras_vae_serve_answers_in_the_serving_install(serving_venv, tmp_path):
    decoder = make_decoder_onnx(tmp_path / "decoder.onnx", latent_dim=4, image_shape=(8, 8, 1))
    port = _free_port()
    env = {**os.environ, "KERAS_VAE_NODE_MODULES": str(REPO / "node_modules")}
    server = subprocess.Popen([str(serving_venv / "bin" / "keras-vae"), "serve", str(decoder),
                               "--port", str(port), "--log-level", "warning"],
                              cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if _get(url + "/healthz")[0] == 200:
                    break
            except OSError:
                pass
            assert server.poll() is None, server.stdout.read()
            assert time.monotonic() < deadline, "the server did not start in 60 s"
            time.sleep(0.2)
        status, png = _post_json(url + "/v1/generate", {"n": 4, "seed": 0})
        assert status == 200 and png.startswith(b"\x89PNG")
        status, page, _ = _get(url + "/")
        assert status == 200 and b"<html" in page.lower()
        config = json.loads(_get(url + "/explorer/config.json")[1])
        assert config["latent_dim"] == 4
        have_npm = (REPO / "node_modules" / "onnxruntime-web" / "dist").is_dir()
        assert config["ort"] is have_npm  # found through KERAS_VAE_NODE_MODULES
        if have_npm:
            status, _, headers = _get(url + "/explorer/ort/ort.wasm.min.js")
            assert status == 200 and headers["content-type"].startswith("text/javascript")
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.slow
def test_explore_and_train_in_the_serving_install(serving_venv, tmp_path):
    decoder = make_decoder_onnx(tmp_path / "decoder.onnx", latent_dim=4, image_shape=(8, 8, 1))
    cli = str(serving_venv / "bin" / "keras-vae")
    env = {**os.environ, "KERAS_VAE_NODE_MODULES": str(REPO / "node_modules")}
    if (REPO / "node_modules" / "onnxruntime-web" / "dist").is_dir():
        site = subprocess.run([cli, "explore", str(decoder), "--out", str(tmp_path / "site")],
                              env=env, capture_output=True, text=True, timeout=120)
        assert site.returncode == 0, site.stderr
        assert (tmp_path / "site" / "index.html").is_file()
    train = subprocess.run([cli, "train", "--epochs", "1"], cwd=tmp_path, capture_output=True,
                           text=True, timeout=120)
    assert train.returncode == 1 and "Traceback" not in train.stderr
    assert "pip install 'keras-vae[tensorflow]'" in train.stderr


@pytest.mark.slow
def test_score_an_image_folder_with_the_exported_files_in_the_serving_install(serving_venv, tmp_path):
    from PIL import Image

    decoder = make_decoder_onnx(tmp_path / "decoder.onnx", latent_dim=4, image_shape=(8, 8, 1))
    encoder = make_encoder_onnx(tmp_path / "encoder.onnx", latent_dim=4, image_shape=(8, 8, 1))
    folder = tmp_path / "images"
    folder.mkdir()
    pixels = (np.random.default_rng(0).random((3, 8, 8)) * 255).astype("uint8")
    for i, image in enumerate(pixels):
        Image.fromarray(image).save(folder / f"image_{i}.png")
    score = subprocess.run([str(serving_venv / "bin" / "keras-vae"), "score", str(decoder),
                            "--encoder", str(encoder), "--dataset", str(folder), "--num-samples", "5",
                            "--out", str(tmp_path / "scores.csv"), "--quiet"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert score.returncode == 0, score.stderr
    rows = (tmp_path / "scores.csv").read_text().splitlines()
    assert len(rows) == 1 + 3 and all(f"image_{i}.png" in "".join(rows) for i in range(3))


@pytest.mark.slow
def test_import_keras_vae_loads_keras_only_when_the_library_is_used(tmp_path):
    code = ("import sys, keras_vae\n"
            "before = 'keras' in sys.modules\n"
            "vae_class = keras_vae.VAE\n"
            "print(before, 'keras' in sys.modules, vae_class.__module__)")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "True", "keras_vae.models.vae"]
