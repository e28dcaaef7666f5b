"""The serving options, declared once: the server CLI, the Ray CLI and the Ray YAML read them.

Each option is one pydantic field with one name everywhere: the keyword of
``create_app``, the key in a Ray Serve config's ``args``
(and ``serve run ... key=value``), and the command-line flag (``--max-batch-size``
for ``max_batch_size``). ``add_arguments`` builds the flags from the fields, and
``parse_options`` validates what argparse read with the same model that
validates the Ray YAML, so a limit such as ``max_batch_size >= 1`` is written once.

* ``ServingOptions``: what one app serves, and how (both CLIs, the YAML).
* ``ServerOptions``: ``keras-vae serve``: that, plus uvicorn's settings.
* ``RayAppOptions``: a Ray Serve application's ``args``: serving plus replicas.
* ``RayOptions``: ``keras-vae serve-ray``: that, plus where Ray and HTTP run.

Renamed options keep their old spelling as deprecated aliases (``DEPRECATED``):
the flag, or the YAML key, still works and prints a one-line warning.
"""

from __future__ import annotations

import argparse
import sys
import typing
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

__all__ = ["ServingOptions", "ServerOptions", "RayAppOptions", "RayOptions", "DEPRECATED",
           "add_arguments", "parse_options", "flag"]

#: old name -> (new name, factor from the old unit to the new one)
DEPRECATED: dict[str, tuple[str, float]] = {
    "max_n": ("max_batch_size", 1),
    "batch_wait_timeout_s": ("batch_wait_ms", 1000),
    "replicas": ("num_replicas", 1),
}


def flag(name: str) -> str:
    """The command-line spelling of option ``name``: ``max_batch_size`` -> ``--max-batch-size``."""
    return "--" + name.replace("_", "-")


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    @model_validator(mode="before")
    @classmethod
    def _rename_deprecated(cls, data: Any) -> Any:
        """Accept an old option name (YAML key or flag) with a one-line warning."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for old, (new, factor) in DEPRECATED.items():
            if old not in data or new not in cls.model_fields:
                continue  # an unknown key is refused by extra="forbid"
            value = data.pop(old)
            if value is None:
                continue
            print(f"warning: {old} ({flag(old)}) is deprecated; use {new} ({flag(new)})"
                  + (f", whose unit is {factor:g} times smaller" if factor != 1 else ""),
                  file=sys.stderr)
            try:
                data[new] = float(value) * factor if factor != 1 else value
            except (TypeError, ValueError):
                data[new] = value  # the field's own validation names the problem
        return data


class ServingOptions(_Options):
    """What one app serves, and its limits. Fields are ``create_app``'s keywords."""

    model: str = Field(min_length=1, description="path of decoder.onnx",
                       json_schema_extra={"positional": True})
    encoder: str | None = Field(None, min_length=1, description="also serve this encoder.onnx: "
                                "/v1/encode, /v1/reconstruct, /v1/score",
                                json_schema_extra={"metavar": "ENCODER.onnx"})
    prior: str | None = Field(None, min_length=1, description="the fitted prior to serve, "
                              "/v1/generate's sampler 'fitted' (default: prior.onnx beside the "
                              "decoder, when there is one)", json_schema_extra={"metavar": "PRIOR.onnx"})
    model_name: str = Field("vae_decoder", min_length=1, description="model name under /v2/models/")
    provider: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="onnxruntime execution provider (cuda needs onnxruntime-gpu)")
    intra_op_threads: int | None = Field(None, ge=1, description="onnxruntime intra-op threads "
                                         "(default: onnxruntime's choice; on Ray, the replica's CPUs)")
    max_batch_size: int = Field(256, ge=1, description="most images per request and latent rows "
                                "per onnxruntime call")
    batch_wait_ms: float = Field(2.0, ge=0, allow_inf_nan=False,
                                 description="how long a micro-batch waits to fill, milliseconds")
    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1, description="largest request body, bytes")
    max_score_samples: int = Field(1000, ge=1,
                                   description="most importance samples per image in /v1/score "
                                               "(at least the K of the decoder's anomaly threshold)")
    max_queue_ms: float = Field(500.0, ge=0, description="bound of each work queue (sampling; "
                                "scoring, encoding) in expected milliseconds of work; beyond it "
                                "requests get 503 with Retry-After ('inf': no bound)")
    score_concurrency: int = Field(1, ge=1, description="score, encode and reconstruct requests "
                                   "computed at once, in threads of their own")

    def app_kwargs(self) -> dict[str, Any]:
        """The fields of ``ServingOptions``, as ``create_app``'s keywords."""
        return self.model_dump(include=set(ServingOptions.model_fields))


class _HTTPOptions(_Options):
    host: str = Field("127.0.0.1", min_length=1, description="HTTP bind address")
    port: int = Field(8000, ge=0, le=65535, description="HTTP port")
    access_log: bool = Field(False, description="log every request")


class ServerOptions(_HTTPOptions, ServingOptions):
    """``keras-vae serve``: one process, uvicorn, the built-in micro-batcher."""

    micro_batching: bool = Field(True, description="micro-batching merges concurrent decode work "
                                 "into one onnxruntime call; this flag decodes every request alone")
    log_level: Literal["critical", "error", "warning", "info", "debug"] = Field(
        "info", description="uvicorn's log level")


class RayAppOptions(ServingOptions):
    """A Ray Serve application's ``args`` (a config file, or ``serve run ... key=value``)."""

    num_replicas: int = Field(1, ge=1, description="number of replicas")
    num_cpus: float = Field(1.0, ge=0, allow_inf_nan=False, description="CPUs per replica")
    num_gpus: float = Field(0.0, ge=0, allow_inf_nan=False,
                            description="GPUs per replica, fractions allowed")
    max_ongoing_requests: int | None = Field(None, ge=1, description="requests one replica holds "
                                             "at once (default: max_batch_size)")
    max_queued_requests: int = Field(256, ge=-1, description="requests Ray holds for the replicas "
                                     "beyond max_ongoing_requests; beyond that Ray itself answers "
                                     "503 (-1: no bound)")

    def threads(self) -> int:
        """onnxruntime threads per replica: ``intra_op_threads``, else the replica's whole CPUs."""
        return self.intra_op_threads or max(1, int(self.num_cpus))


class RayOptions(_HTTPOptions, RayAppOptions):
    """``keras-vae serve-ray``: the application's args, plus where Ray and HTTP run."""

    address: str | None = Field(None, description="join a running Ray cluster ('auto', HOST:6379 "
                                "or ray://HOST:10001) instead of starting a local instance")
    name: str = Field("vae", min_length=1, description="Serve application name")

    def app_args(self) -> dict[str, Any]:
        """The fields of ``RayAppOptions``, as a Ray Serve config's ``args``."""
        return self.model_dump(include=set(RayAppOptions.model_fields))


def _value_type(annotation: Any) -> tuple[Any, tuple | None]:
    """argparse ``type`` and ``choices`` for a field's annotation."""
    if typing.get_origin(annotation) is Literal:
        return str, tuple(typing.get_args(annotation))
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if args:  # X | None
        return _value_type(args[0])
    return annotation, None


def add_arguments(parser: argparse.ArgumentParser, options: type[_Options]) -> None:
    """Add a flag per field of ``options`` (a positional for ``model``), and the old spellings.

    argparse's defaults are None, so that ``parse_options`` passes on only what
    was given and the model's defaults apply (the help shows them).
    """
    for name, field in options.model_fields.items():
        extra = field.json_schema_extra or {}
        if extra.get("positional"):
            parser.add_argument(name, help=field.description)
        elif field.annotation is bool:
            spelling = flag(f"no_{name}") if field.default else flag(name)
            parser.add_argument(spelling, dest=name, action="store_const",
                                const=not field.default, default=None, help=field.description)
        else:
            value_type, choices = _value_type(field.annotation)
            default = "" if field.default is None else f" (default {field.default})"
            parser.add_argument(flag(name), type=value_type, choices=choices, default=None,
                                metavar=None if choices else extra.get("metavar", name.upper()),
                                help=f"{field.description}{default}")
    for old, (new, _) in DEPRECATED.items():
        if new in options.model_fields:
            value_type, _ = _value_type(options.model_fields[new].annotation)
            parser.add_argument(flag(old), dest=old, type=value_type, default=None,
                                help=argparse.SUPPRESS)


def parse_options(parser: argparse.ArgumentParser, options: type[_Options],
                  argv: list[str] | None = None):
    """Parse ``argv`` into an ``options`` instance.

    argparse's own errors (an unknown flag, a non-number) exit with its usage
    message; a value the model refuses raises ``ValueError`` naming the flags.
    """
    given = {k: v for k, v in vars(parser.parse_args(argv)).items() if v is not None}
    try:
        return options.model_validate(given)
    except ValidationError as exc:
        problems = [f"{flag(str(e['loc'][0])) if e['loc'] else 'options'}: {e['msg']}"
                    for e in exc.errors()]
        raise ValueError("; ".join(problems)) from None
