"""A HierarchicalVAE through the product path: trained by `keras-vae train --model hierarchical`,
exported (decoder, encoder, log-weight graph), sampled by `keras-vae generate` and scored by
`keras-vae score`, with onnxruntime's numbers checked against Keras on the same noise."""

import numpy as np
import pytest

from helpers.processes import run_python

pytestmark = pytest.mark.slow

TRAIN = ["-m", "keras_vae", "train", "--model", "hierarchical", "--epochs", "2", "--quiet"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """{name: run directory} of an MLP on binarized digits and a conv on 8-bit RGB images."""
    root = tmp_path_factory.mktemp("hierarchical")
    rng = np.random.default_rng(0)
    rgb = root / "rgb.npz"
    np.savez(rgb, x_train=rng.integers(0, 256, (96, 8, 8, 3), dtype=np.uint8),
             x_test=rng.integers(0, 256, (16, 8, 8, 3), dtype=np.uint8))
    options = {
        "mlp": ["--num-groups", "3", "--latent-dim", "4", "--width", "32", "--dynamic-binarization"],
        "conv": ["--architecture", "conv", "--num-resolutions", "2", "--num-groups", "3",
                 "--latent-dim", "2", "--width", "8", "--likelihood", "logistic_mixture",
                 "--mixture-components", "2", "--dataset", str(rgb), "--val-fraction", "0"],
    }
    runs = {}
    for name, extra in options.items():
        runs[name] = root / name
        run_python(TRAIN + extra + ["--out", str(runs[name])], backend="jax")
        run_python(["-m", "keras_vae", "export", str(runs[name]), "--out",
                    str(runs[name] / "decoder.onnx"), "--encoder-out", str(runs[name] / "encoder.onnx")])
    return runs


@pytest.mark.parametrize("name", ["mlp", "conv"])
def test_the_exported_graphs_compute_what_keras_computes_on_the_same_noise(runs, name):
    import onnxruntime

    run = runs[name]
    code = f"""
import json, numpy as np, keras, keras_vae
import onnxruntime as ort
m = keras.models.load_model({str(run / 'model.keras')!r})
rng = np.random.default_rng(1)
z = rng.standard_normal((5, m.noise_size)).astype('float32')
x = m.decode(z)
if m.likelihood != 'gaussian':
    x = (np.round(x * 255) / 255).astype('float32') if m.likelihood != 'bernoulli' else (x > 0.5).astype('float32')
dec = ort.InferenceSession({str(run / 'decoder.onnx')!r})
enc = ort.InferenceSession({str(run / 'encoder.onnx')!r})
lw = ort.InferenceSession({str(run / 'log_weight.onnx')!r})
eps = rng.standard_normal((5, m.noise_size)).astype('float32')
mean, log_var = m.encode(x)
out = {{
  'decoder': float(np.abs(dec.run(None, {{'z': z}})[0] - m.decode(z)).max()),
  'encoder': float(max(np.abs(a - b).max() for a, b in zip(enc.run(None, {{'x': x}}), (mean, log_var)))),
  'log_weight': float(np.abs(lw.run(None, {{'x': x, 'epsilon': eps}})[0] - m.numpy_log_weights(x, eps)).max()),
  'reconstruct': float(np.abs(m.decode(mean) - m.decode_groups(m.encode_groups(x))).max()),
  'noise_size': m.noise_size, 'groups': [list(s) for s in m.group_shapes],
}}
print(json.dumps(out))
"""
    import json

    result = json.loads(run_python(["-c", code], backend="torch").stdout.strip().splitlines()[-1])
    assert result["decoder"] < 1e-5 and result["encoder"] < 1e-4 and result["reconstruct"] < 1e-5
    assert result["log_weight"] < 1e-3  # nats, on weights of hundreds of nats
    session = onnxruntime.InferenceSession(str(runs[name] / "decoder.onnx"))
    metadata = session.get_modelmeta().custom_metadata_map
    assert metadata["model"] == "hierarchical" and int(metadata["latent_dim"]) == result["noise_size"]
    assert [group["shape"] for group in json.loads(metadata["latent_groups"])] == result["groups"]


def test_generate_and_score_give_keras_numbers(runs, tmp_path):
    run = runs["mlp"]
    run_python(["-m", "keras_vae", "generate", str(run / "decoder.onnx"), "-n", "6", "--seed", "4",
                "--npy", str(tmp_path / "onnx.npy")])
    for source, out in ((run, "keras.csv"), (run / "decoder.onnx", "onnx.csv")):
        run_python(["-m", "keras_vae", "score", str(source), "--dataset", "digits", "--binarize",
                    "--max-images", "40", "--num-samples", "30", "--quiet", "--out",
                    str(tmp_path / out)])
    keras_scores = np.genfromtxt(tmp_path / "keras.csv", delimiter=",", names=True)
    onnx_scores = np.genfromtxt(tmp_path / "onnx.csv", delimiter=",", names=True)
    for column in ("log_px", "elbo", "recon_mse"):
        np.testing.assert_allclose(onnx_scores[column], keras_scores[column], atol=1e-3)
    sampled = run_python(["-c", "import numpy as np, keras, keras_vae; "
                          f"m = keras.models.load_model({str(run / 'model.keras')!r}); "
                          f"np.save({str(tmp_path / 'keras.npy')!r}, m.sample(6, seed=4))"],
                         backend="jax")
    assert sampled.returncode == 0
    np.testing.assert_allclose(np.load(tmp_path / "onnx.npy"), np.load(tmp_path / "keras.npy"),
                               atol=1e-5)


def test_int8_and_unfit_options_are_refused_with_one_line(runs, tmp_path):
    result = run_python(["-m", "keras_vae", "export", str(runs["mlp"]), "--out",
                         str(tmp_path / "d.onnx"), "--precision", "int8"], check=False)
    assert result.returncode != 0 and "int8" in result.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "d.onnx").exists()
    for args, option in ((["--model", "hierarchical", "--gated"], "--gated"),
                         (["--model", "hierarchical", "--num-groups", "0"], "--num-groups"),
                         (["--num-groups", "3"], "--num-groups"),
                         (["--model", "hierarchical", "--architecture", "conv", "--num-resolutions",
                           "4"], "num_resolutions")):
        result = run_python(["-m", "keras_vae", "train", *args, "--out", str(tmp_path / "r")],
                            check=False)
        last = result.stderr.strip().splitlines()[-1]
        assert result.returncode != 0 and option in last, last
