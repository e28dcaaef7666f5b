"""The serving options are declared once: the server CLI, the Ray CLI, the Ray YAML and
create_app read the same fields, names and defaults; renamed flags still work, with a warning."""

import inspect
from pathlib import Path

import pytest
import yaml

from keras_vae.serving import options as opts
from keras_vae.serving import server
from keras_vae.serving.app import create_app
from keras_vae.serving.options import RayAppOptions, RayOptions, ServerOptions, ServingOptions

REPO = Path(__file__).resolve().parents[2]
ray_app = pytest.importorskip("keras_vae.serving.ray_app")

# One value per shared option, none of them a default.
SHARED = {"model": "decoder.onnx", "encoder": "encoder.onnx", "model_name": "digits",
          "provider": "cpu", "intra_op_threads": 3, "max_batch_size": 64, "batch_wait_ms": 5.0,
          "max_body_bytes": 1000, "max_score_samples": 7, "max_queue_ms": 250.0,
          "score_concurrency": 2, "prior": "prior.onnx"}


def argv_for(values: dict) -> list[str]:
    argv = [values["model"]]
    for name, value in values.items():
        if name != "model":
            argv += [opts.flag(name), str(value)]
    return argv


def test_every_shared_option_is_covered_here():
    assert set(SHARED) == set(ServingOptions.model_fields)
    for name, field in ServingOptions.model_fields.items():
        assert SHARED[name] != field.default, name


def test_server_cli_ray_cli_and_ray_yaml_read_one_option_set():
    argv = argv_for(SHARED)
    from_server = opts.parse_options(server.build_parser(), ServerOptions, argv)
    from_ray = opts.parse_options(ray_app.build_parser(), RayOptions, argv)
    from_yaml = RayAppOptions.model_validate({k: str(v) for k, v in SHARED.items()})
    assert from_server.app_kwargs() == from_ray.app_kwargs() == from_yaml.app_kwargs() == SHARED
    # The Ray CLI hands the application exactly the fields a config file's args hold.
    assert set(from_ray.app_args()) == set(RayAppOptions.model_fields)


def test_ray_config_file_args_are_options():
    config = yaml.safe_load((REPO / "keras_vae" / "serving" / "ray_serve_config.yaml").read_text())
    args = config["applications"][0]["args"]
    assert set(args) <= set(RayAppOptions.model_fields)
    assert RayAppOptions.model_validate(args).batch_wait_ms == args["batch_wait_ms"]


def test_create_app_takes_the_options_with_their_defaults():
    parameters = inspect.signature(create_app).parameters
    for name, field in ServingOptions.model_fields.items():
        assert name in parameters, name
        if name != "model":
            assert parameters[name].default == field.default, name


def test_help_lists_each_option_once_by_its_one_name():
    for parser, model in ((server.build_parser(), ServerOptions),
                          (ray_app.build_parser(), RayOptions)):
        text = parser.format_help()
        for name, field in model.model_fields.items():
            spelling = name if name == "model" else opts.flag(
                f"no_{name}" if field.annotation is bool and field.default else name)
            assert spelling in text, spelling
        for old in opts.DEPRECATED:
            assert opts.flag(old) not in text  # accepted, but not advertised


@pytest.mark.parametrize("argv, name, value", [
    (["--max-n", "5"], "max_batch_size", 5),
    (["--batch-wait-timeout-s", "0.004"], "batch_wait_ms", 4.0),
    (["--replicas", "3"], "num_replicas", 3),
])
def test_old_spellings_are_deprecated_aliases(capsys, argv, name, value):
    parsed = opts.parse_options(ray_app.build_parser(), RayOptions, ["m.onnx", *argv])
    assert getattr(parsed, name) == value
    warning = capsys.readouterr().err.strip()
    assert len(warning.splitlines()) == 1 and "deprecated" in warning
    assert opts.flag(name) in warning and argv[0] in warning


def test_old_yaml_key_is_a_deprecated_alias(capsys):
    parsed = RayAppOptions.model_validate({"model": "m.onnx", "batch_wait_timeout_s": 0.01})
    assert parsed.batch_wait_ms == pytest.approx(10.0)
    assert "deprecated" in capsys.readouterr().err


def test_a_refused_value_names_its_flag():
    with pytest.raises(ValueError, match="--max-batch-size"):
        opts.parse_options(server.build_parser(), ServerOptions, ["m.onnx", "--max-batch-size", "0"])
    with pytest.raises(ValueError, match="--num-replicas"):
        opts.parse_options(ray_app.build_parser(), RayOptions, ["m.onnx", "--num-replicas", "0"])


def test_no_queue_bound_is_spelled_inf_and_nan_is_refused():
    parsed = opts.parse_options(server.build_parser(), ServerOptions, ["m.onnx", "--max-queue-ms", "inf"])
    assert parsed.max_queue_ms == float("inf")
    from_yaml = yaml.safe_load("model: m.onnx\nmax_queue_ms: .inf")  # YAML's spelling of infinity
    assert RayAppOptions.model_validate(from_yaml).max_queue_ms == float("inf")
    for bad in ("nan", "-1"):
        with pytest.raises(ValueError, match="--max-queue-ms"):
            opts.parse_options(server.build_parser(), ServerOptions, ["m.onnx", "--max-queue-ms", bad])
