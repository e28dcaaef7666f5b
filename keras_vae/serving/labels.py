"""Class labels of a class-conditional export, as onnxruntime's wrappers and the routes read them.

A class-conditional graph (``keras_vae.models.conditioning``) has a second input ``label``
(int64 ``[batch]``) and ``class_names`` metadata; the checks of the labels
themselves are ``keras_vae.core.contract.check_labels``.
"""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np

from keras_vae.core import contract
from keras_vae.serving.onnx_model import ModelLoadError

__all__ = ["read_label_input", "check_model_labels"]


def read_label_input(inputs: list, metadata: dict[str, str], where: str) -> tuple[list, str | None,
                                                                                   tuple[str, ...] | None]:
    """Splits a graph's inputs into (the others, the label input's name, the class names).

    A class-conditional graph has a second input ``label`` (int64 ``[batch]``) and
    ``class_names`` metadata; an unconditional graph has neither. Raises
    ``ModelLoadError`` when only one of them is there, or the label is not int64.
    """
    label = [i for i in inputs if i.name == contract.LABEL_INPUT]
    try:
        class_names = contract.decode_class_names(metadata.get(contract.CLASS_NAMES))
    except ValueError as exc:
        raise ModelLoadError(f"{where}: {exc}") from None
    if not label and class_names is None:
        return inputs, None, None
    if not label or class_names is None:
        raise ModelLoadError(f"{where}: a class-conditional graph needs both an input "
                             f"{contract.LABEL_INPUT!r} and {contract.CLASS_NAMES!r} metadata")
    if label[0].type != "tensor(int64)" or len(label[0].shape) != 1:
        raise ModelLoadError(f"{where}: input {contract.LABEL_INPUT!r} must be int64 [batch], "
                             f"got {label[0].type} {label[0].shape}")
    return [i for i in inputs if i.name != contract.LABEL_INPUT], label[0].name, class_names


def check_model_labels(class_names: tuple[str, ...] | None, labels: Any, n: int) -> np.ndarray | None:
    """Labels for n rows of a model with these classes (None: unconditional); ValueError otherwise."""
    if class_names is None:
        if labels is not None:
            raise ValueError("this model is unconditional: it takes no label")
        return None
    if labels is None:
        raise ValueError(f"this model is class-conditional: give a label, one of the classes "
                         f"{contract.describe_classes(class_names)}")
    return contract.check_labels(labels, n, class_names)



def label_schema(class_names: tuple[str, ...]) -> dict[str, Any]:
    """The JSON schema of one label: a class index, or a class name."""
    return {"anyOf": [{"type": "integer", "minimum": 0, "maximum": len(class_names) - 1},
                      {"type": "string", "enum": list(class_names)}],
            "description": f"a class: {contract.describe_classes(class_names)}"}


def label_type(class_names: tuple[str, ...]) -> Any:
    """A pydantic type of one label (index or name), checked by ``contract.check_labels``: a bad
    label is a 422 whose message names the valid classes."""
    from pydantic import BeforeValidator, WithJsonSchema

    def check(value: Any) -> int:
        return int(contract.check_labels(value, 1, class_names)[0])

    return Annotated[int, BeforeValidator(check), WithJsonSchema(label_schema(class_names))]


def fill_labels(class_names: tuple[str, ...] | None, label: Any, labels: list | None,
                n: int, per_image: bool = False) -> np.ndarray | None:
    """A request's labels for n rows, int64 ``[n]`` (None for an unconditional model).

    ``labels`` (checked indices) repeat in turn to fill the n rows, one per row when
    there are n of them; else every row gets ``label``; without either, row i gets class
    i mod C, so that a grid shows every class in turn. With ``per_image`` (scoring, where a
    cycled list would silently score images under the wrong classes), ``labels`` must have
    exactly n entries: ValueError otherwise.
    """
    if class_names is None:
        return None
    if labels and per_image and len(labels) != n:
        raise ValueError(f"labels must give one class per image: got {len(labels)} label"
                         f"{'s' if len(labels) != 1 else ''} for {n} image{'s' if n != 1 else ''}")
    if labels:
        return np.resize(np.asarray(labels, np.int64), n)
    if label is not None:
        return np.full(n, int(label), np.int64)
    return np.arange(n, dtype=np.int64) % len(class_names)


def label_fields(class_names: tuple[str, ...] | None, max_batch_size: int,
                 required: bool = False, per_image: bool = False) -> type:
    """The base class of a request body: pydantic's ``BaseModel``, with a conditional model's
    label fields.

    Sampling bodies (``required=False``) get ``label`` (one class for every row) and
    ``labels`` (classes repeating in turn to fill the rows; see ``fill_labels``); bodies of
    images for a class-conditional encoder (``required=True``) need ``labels``, exactly one
    per image with ``per_image`` (``/v1/score``).
    """
    from pydantic import BaseModel, Field

    if class_names is None:
        return BaseModel
    Label = label_type(class_names)
    classes = contract.describe_classes(class_names)
    many = Field(... if required else None, min_length=1, max_length=max_batch_size,
                 description=f"the class of each image, {classes}; "
                             + ("one per image, as many as there are images" if per_image
                                else "a shorter list repeats in turn")
                             + ("" if required else "; takes precedence over label"))
    if required:
        class ImageLabels(BaseModel):
            labels: list[Label] = many  # type: ignore[valid-type]
        return ImageLabels

    class SampleLabels(BaseModel):
        label: Label | None = Field(  # type: ignore[valid-type]
            None, description=f"one class for every image, {classes} (without label or labels: "
                              "image i gets class i mod the number of classes)")
        labels: list[Label] | None = many  # type: ignore[valid-type]
    return SampleLabels
