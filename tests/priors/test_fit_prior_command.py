"""keras-vae fit-prior's arguments: refused with argparse's one-line message before any work."""

import pytest

from keras_vae.commands import fit_prior


@pytest.mark.parametrize("argv, message", [
    (["run"], "--kind"),
    (["run", "--kind", "vae"], "invalid choice"),
    (["run", "--kind", "diffusion", "--steps", "0"], "--steps must be at least 1"),
    (["run", "--kind", "diffusion", "--steps", "60", "--train-steps", "50"], "--steps must be from 1 to --train-steps"),
    (["run", "--kind", "diffusion", "--eta", "1.5"], "--eta must be from 0 to 1"),
    (["run", "--kind", "gmm", "--components", "0"], "--components must be at least 1"),
    (["run", "--kind", "flow", "--lr", "0"], "--lr must be above 0"),
    (["run", "--kind", "flow", "--fit-to", "samples"], "invalid choice"),
])
def test_bad_arguments_are_refused(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        fit_prior.parse_args(argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_each_kind_gets_its_own_defaults():
    flow = fit_prior.options_for(fit_prior.parse_args(["run", "--kind", "flow"]))
    assert flow == {"units": 256, "epochs": 30, "batch_size": 256, "lr": 1e-3, "layers": 8}
    diffusion = fit_prior.options_for(fit_prior.parse_args(
        ["run", "--kind", "diffusion", "--units", "64", "--steps", "20", "--eta", "1"]))
    assert diffusion == {"units": 64, "epochs": 100, "batch_size": 256, "lr": 1e-3, "blocks": 3,
                         "train_steps": 1000, "steps": 20, "eta": 1.0}
    gmm = fit_prior.options_for(fit_prior.parse_args(["run", "--kind", "gmm", "--covariance", "diag"]))
    assert gmm == {"components": 10, "covariance_type": "diag"}
