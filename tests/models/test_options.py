"""The model's options are declared once, in `keras_vae.models.options.ModelOptions`: the VAE's
signature and config, TrainConfig, build_model and `keras-vae train` all follow it.

Every test iterates over the declaration, so an option added there is checked everywhere.
The tests marked `backend` build VAEs; the others need no particular backend.
"""

import dataclasses
import inspect
import json

import pytest

from keras_vae.commands import train as train_command
from keras_vae.models.options import OPTION_NAMES
from keras_vae.models.options import ModelOptions
from keras_vae.core.options import OptionError

OPTIONS = dataclasses.fields(ModelOptions)
SMALL = dict(latent_dim=2, hidden_units=(8,))  # a quick model, unless the option is under test


def other_value(option):
    """A value the option takes that is not its default."""
    default, choices = option.default, option.metadata["choices"]
    if isinstance(default, bool):
        return not default
    if isinstance(default, str):
        return next(choice for choice in choices if choice != default)
    if isinstance(default, tuple):
        return default + default[-1:] if default else (4,)
    return default + 1


def refused_values(option):
    """Values the option does not take, from its declared choices and minimum."""
    default, choices, minimum = (option.default, option.metadata["choices"],
                                 option.metadata["minimum"])
    values = []
    if choices:
        values.append("no-such-" + choices[0])
    if minimum is not None:
        values.append((minimum - 1,) if isinstance(default, tuple) else minimum - 1)
    return values


def command_line(option, value):
    """The `keras-vae train` arguments that set the option to `value`."""
    flag = "--" + option.name.replace("_", "-")
    if isinstance(value, bool):
        return [flag] if value else []
    if isinstance(value, tuple):
        return [flag, *map(str, value)]
    return [flag, str(value)]


def as_json(value):
    return json.loads(json.dumps(value))


def test_the_vae_takes_every_option_as_a_keyword_with_the_declared_default():
    from keras_vae.models.vae import VAE

    parameters = list(inspect.signature(VAE.__init__).parameters.values())
    names = [parameter.name for parameter in parameters]
    declared = parameters[names.index("input_shape") + 1:names.index("seed")]
    assert tuple(parameter.name for parameter in declared) == OPTION_NAMES
    for parameter, option in zip(declared, OPTIONS):
        assert parameter.default == option.default, option.name
    for option in OPTIONS:
        assert f"\n        {option.name}: " in VAE.__doc__, f"VAE's docstring lacks {option.name}"


def test_bool_options_default_to_false_so_that_a_flag_turns_them_on():
    assert [option.name for option in OPTIONS if option.default is True] == []


@pytest.mark.backend
@pytest.mark.parametrize("option", OPTIONS, ids=OPTION_NAMES)
def test_every_option_round_trips_through_get_config_and_from_config(option):
    import keras_vae
    from keras_vae.training.run import TrainConfig
    from keras_vae.training.run import build_model

    value = other_value(option)
    options = dict(SMALL, **{option.name: value})
    vae = keras_vae.VAE(input_shape=(8, 8, 1), seed=3, **options)
    config = vae.get_config()
    assert getattr(vae, option.name) == value
    assert config[option.name] == as_json(value)
    parameters = set(inspect.signature(keras_vae.VAE.__init__).parameters) - {"self", "kwargs"}
    assert parameters <= set(config), "get_config returns every constructor argument"

    loaded = keras_vae.VAE.from_config(as_json(config))
    assert getattr(loaded, option.name) == value
    assert loaded.get_config() == config

    built = build_model(TrainConfig(**options, seed=3), (8, 8, 1))
    assert dict(built.get_config(), name=config["name"]) == config  # Keras numbers the names


@pytest.mark.backend
def test_a_config_saved_by_version_0_1_0_still_loads():
    import keras_vae

    saved = {
        "name": "vae", "trainable": True, "input_shape": [8, 8, 1], "latent_dim": 4,
        "architecture": "mlp", "hidden_units": [16, 8], "gated": True, "conv_filters": [32, 64],
        "likelihood": "gaussian", "decoder_std": "learned", "beta": 0.5, "kl_warmup_steps": 0,
        "num_samples": 3, "objective": "iwae", "sticking_the_landing": True, "prior": "standard",
        "prior_components": 500, "dynamic_binarization": True, "seed": None,
        "source_backend": "jax",
    }
    config = keras_vae.VAE.from_config(saved).get_config()
    assert {key: config[key] for key in saved} == saved


def test_every_option_is_a_train_flag_with_the_declared_default_and_help(monkeypatch, capsys):
    args = vars(train_command.parse_args([]))
    for option in OPTIONS:
        assert args[option.name] == option.default, option.name
    monkeypatch.setenv("COLUMNS", "1000")  # no help text is wrapped
    with pytest.raises(SystemExit):
        train_command.parse_args(["--help"])
    text = capsys.readouterr().out
    for option in OPTIONS:
        flag = "--" + option.name.replace("_", "-")
        assert f"\n  {flag}" in text, f"--help lacks {flag}"
        entry = " ".join(text.split(f"\n  {flag}")[1].split("\n  --")[0].split())
        assert option.metadata["help"] in entry, entry
        if not isinstance(option.default, bool):
            shown = (" ".join(map(str, option.default)) or "none") \
                if isinstance(option.default, tuple) else str(option.default)
            assert f"(default: {shown})" in entry, entry


@pytest.mark.parametrize("option", OPTIONS, ids=OPTION_NAMES)
def test_each_train_flag_sets_its_option_in_the_train_config(option):
    value = other_value(option)
    args = train_command.parse_args(command_line(option, value))
    assert getattr(args, option.name) == value
    config = train_command.train_config(args)
    assert getattr(config, option.name) == value
    assert dataclasses.asdict(config)[option.name] == value
    assert config.model_kwargs() == dict(ModelOptions().model_kwargs(), **{option.name: value})


def test_train_config_holds_every_option_flat():
    from keras_vae.training.run import TrainConfig

    assert TrainConfig().model_kwargs() == ModelOptions().model_kwargs()
    others = {option.name: other_value(option) for option in OPTIONS}
    record = dataclasses.asdict(TrainConfig(**others, epochs=3))
    assert {name: record[name] for name in OPTION_NAMES} == others
    assert record["epochs"] == 3


def test_options_are_converted_to_their_types():
    options = ModelOptions(latent_dim=8.0, hidden_units=[64, 32.0], gated=1, beta=2,
                           decoder_std="0.5")
    assert options.latent_dim == 8 and isinstance(options.latent_dim, int)
    assert options.hidden_units == (64, 32)
    assert options.gated is True
    assert options.beta == 2.0 and isinstance(options.beta, float)
    assert options.decoder_std == 0.5
    assert ModelOptions(decoder_std="learned").decoder_std == "learned"


@pytest.mark.parametrize("option", [option for option in OPTIONS if refused_values(option)],
                         ids=lambda option: option.name)
def test_values_an_option_does_not_take_are_refused_by_the_model_and_the_command_line(
        option, capsys):
    for value in refused_values(option):
        with pytest.raises(OptionError, match=f"^{option.name} must be "):
            ModelOptions(**{option.name: value})
        with pytest.raises(SystemExit):
            train_command.parse_args(command_line(option, value))
        error = capsys.readouterr().err
        flag = "--" + option.name.replace("_", "-")
        assert f"{flag} must be " in error or f"argument {flag}: invalid choice" in error, error


@pytest.mark.parametrize("value,message", [
    (0.0, "decoder_std must be a positive float or 'learned'"),
    ("wide", "decoder_std must be a number or 'learned'"),
])
def test_decoder_std_is_a_positive_number_or_learned(value, message, capsys):
    with pytest.raises(OptionError, match=message):
        ModelOptions(decoder_std=value)
    with pytest.raises(SystemExit):
        train_command.parse_args(["--decoder-std", str(value)])
    assert "--" + message.replace("_", "-") in capsys.readouterr().err
