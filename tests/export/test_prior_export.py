"""Fitted priors through the product path: `keras-vae fit-prior` on a trained run (each kind
under another backend), `keras-vae export` (prior.onnx beside the decoder), `keras-vae generate
--sampler fitted`; the ONNX prior's draws and images checked against Keras on the same seed,
and the page's loop (under Node.js) against both."""

import numpy as np
import pytest
from helpers.fitted_js import js_draws
from helpers.processes import run_python

pytestmark = pytest.mark.slow

KINDS = {"gmm": ("tensorflow", ["--components", "3"]),
         "flow": ("torch", ["--layers", "2", "--units", "16", "--epochs", "2"]),
         "diffusion": ("jax", ["--units", "16", "--blocks", "1", "--epochs", "2", "--train-steps", "50",
                               "--steps", "8", "--eta", "0.5"])}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """{name: (run directory, folder with decoder.onnx and prior.onnx, the prior's .keras)}."""
    root = tmp_path_factory.mktemp("priors")
    runs = {"vae": ["--latent-dim", "4", "--hidden-units", "32", "--dynamic-binarization"],
            "hierarchical": ["--model", "hierarchical", "--num-groups", "2", "--latent-dim", "3",
                             "--width", "16", "--dynamic-binarization"]}
    for name, options in runs.items():
        run_python(["-m", "keras_vae", "train", "--epochs", "2", "--quiet", *options,
                    "--out", str(root / name)], backend="jax" if name == "vae" else "torch")
    jobs = [("vae", kind, *KINDS[kind]) for kind in KINDS] + [
        ("hierarchical", "flow", "tensorflow", ["--layers", "2", "--units", "16", "--epochs", "2"])]
    out = {}
    for run, kind, backend, options in jobs:
        prior = root / run / f"{kind}.keras"
        run_python(["-m", "keras_vae", "fit-prior", str(root / run), "--kind", kind, "--backend", backend,
                    "--max-images", "400", "--out", str(prior), *options])
        folder = root / f"{run}-{kind}"
        folder.mkdir()
        run_python(["-m", "keras_vae", "export", str(root / run), "--out", str(folder / "decoder.onnx"),
                    "--prior", str(prior)])
        out[f"{run}-{kind}"] = (root / run, folder, prior)
    return out


def keras_and_onnx(exported, name, n, seed, temperature, temperatures=None):
    """(Keras z, images) and (onnxruntime z, images) for the same draw."""
    from keras_vae.priors.fitting import decoder_width, load_prior, model_groups
    from keras_vae.serving.fitted import FittedPriorModel
    from keras_vae.serving.sampler import Sampler
    from keras_vae.training.run_directory import load_vae

    run, folder, prior_path = exported[name]
    vae, prior = load_vae(str(run)), load_prior(str(prior_path))
    z = prior.sample_latents(n, decoder_width(vae), seed, temperature, model_groups(vae), temperatures)
    onnx_prior = FittedPriorModel(folder / "prior.onnx", provider="cpu")
    z_onnx = onnx_prior.latents(n, seed, temperature, temperatures)
    sampler = Sampler(folder / "decoder.onnx", provider="cpu")
    return (z, vae.decode(z)), (z_onnx, sampler.decode(z_onnx))


@pytest.mark.parametrize("name", ["vae-gmm", "vae-flow", "vae-diffusion", "hierarchical-flow"])
def test_the_exported_prior_draws_what_keras_draws_for_the_same_seed(exported, name):
    temperatures = [1.3, 0.6] if name.startswith("hierarchical") else None
    for seed, temperature in ((0, 1.0), (3, 0.5)):
        (z, x), (z_onnx, x_onnx) = keras_and_onnx(exported, name, 32, seed, temperature, temperatures)
        np.testing.assert_allclose(z_onnx, z, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(x_onnx, x, atol=1e-4)


def test_the_metadata_records_the_fit_and_the_cli_and_the_page_draw_the_same_images(exported, tmp_path):
    from keras_vae.serving.fitted import FittedPriorModel, explorer_settings

    run, folder, prior_path = exported["vae-diffusion"]
    model = FittedPriorModel(folder / "prior.onnx", provider="cpu")
    fit = model.prior.fit
    assert fit["kind"] == "diffusion" and fit["images"] == 400 and fit["fit_to"] == "means"
    assert fit["backend"] == "jax" and fit["cpu_seconds"] > 0 and fit["epochs"] == 2
    assert model.prior.schedule.steps == 8 and model.prior.schedule.eta == 0.5
    run_python(["-m", "keras_vae", "generate", str(folder / "decoder.onnx"), "-n", "16", "--seed", "5",
                "--sampler", "fitted", "--npy", str(tmp_path / "x.npy")])
    (z, x), _ = keras_and_onnx(exported, "vae-diffusion", 16, 5, 1.0)
    np.testing.assert_allclose(np.load(tmp_path / "x.npy"), x, atol=1e-4)
    config = {"latent_dim": 4, "fitted": explorer_settings(model)}
    (page_z,) = js_draws(folder / "prior.onnx", config, [[16, 5, 1.0]])
    np.testing.assert_allclose(page_z, z, rtol=1e-4, atol=1e-4)


def test_export_refuses_a_prior_fitted_to_other_latents(exported, tmp_path):
    run, _, _ = exported["vae-gmm"]
    hierarchical_prior = exported["hierarchical-flow"][2]
    result = run_python(["-m", "keras_vae", "export", str(run), "--out", str(tmp_path / "decoder.onnx"),
                         "--prior", str(hierarchical_prior)], check=False)
    assert result.returncode != 0 and "fitted prior draws z of 3 numbers" in result.stderr
    assert not (tmp_path / "prior.onnx").exists()
