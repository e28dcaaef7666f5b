"""Options declared once, as dataclass fields: `option`, `checked_value`, `OptionError`.

`keras_vae.models.options.ModelOptions` and `keras_vae.data.options.ImageOptions` are
made of these fields; `keras-vae train` builds one flag per field from them. Standard
library only, so the command line reads the options before it chooses a Keras backend.
"""

import dataclasses


def option(default, help, *, choices=None, minimum=None):
    """A declared option: a dataclass field (of `ModelOptions`, `ImageOptions`, ...).

    Args:
        default: the default value. Its type is the option's type: bool, int,
            float, str, or a tuple of ints.
        help: one line for `keras-vae train --help` (which adds the default).
        choices: for a str option, the values it takes; for a number, the
            words it takes besides numbers (e.g. "learned").
        minimum: the smallest number the option takes (each number, for a tuple).
    """
    return dataclasses.field(default=default,
                             metadata={"help": help, "choices": choices, "minimum": minimum})


class OptionError(ValueError):
    """A model option got a value it does not take.

    `option` is the option's name, `requirement` says in words what it takes
    (e.g. ">= 1", "one of ('elbo', 'iwae')").
    """

    def __init__(self, option, requirement, value):
        super().__init__(f"{option} must be {requirement}, got {value!r}")
        self.option = option
        self.requirement = requirement


def checked_value(field, value):
    """`value` converted to the type of the field's default.

    Raises OptionError if the option does not take the value.
    """
    default, choices, minimum = field.default, field.metadata["choices"], field.metadata["minimum"]
    if isinstance(default, str):
        if value not in choices:
            raise OptionError(field.name, f"one of {choices}", value)
        return value
    if choices and isinstance(value, str) and value in choices:  # e.g. decoder_std="learned"
        return value
    if isinstance(default, bool):
        return bool(value)
    try:
        if isinstance(default, tuple):
            value = tuple(int(number) for number in value)
        else:
            value = type(default)(value)
    except (TypeError, ValueError):
        kinds = {int: "an integer", float: "a number", tuple: "a sequence of integers"}
        words = "".join(f" or {word!r}" for word in choices or ())
        raise OptionError(field.name, kinds[type(default)] + words, value) from None
    numbers = value if isinstance(value, tuple) else (value,)
    if minimum is not None and any(number < minimum for number in numbers):
        raise OptionError(field.name, f">= {minimum}", value)
    return value
