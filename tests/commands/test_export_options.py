"""keras-vae export's parity bound: its default is the contract's, and it must be positive."""

import pytest

from keras_vae.commands.export import parse_args
from keras_vae.core.contract import PARITY_TOLERANCE


def test_the_parity_bound_defaults_to_the_contracts_and_can_be_widened():
    assert parse_args(["runs/x", "--out", "d.onnx"]).tolerance == PARITY_TOLERANCE
    assert parse_args(["runs/x", "--out", "d.onnx", "--tolerance", "1e-4"]).tolerance == 1e-4


@pytest.mark.parametrize("value", ["0", "-1e-4", "nan"])
def test_a_bound_that_is_not_positive_is_refused(value, capsys):
    with pytest.raises(SystemExit) as exit_:
        parse_args(["runs/x", "--out", "d.onnx", f"--tolerance={value}"])
    assert exit_.value.code == 2
    assert "--tolerance must be a positive number" in capsys.readouterr().err
