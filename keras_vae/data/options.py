"""How an image folder is read: `ImageOptions`, declared once (NumPy-free, Keras-free)."""

import dataclasses

from keras_vae.core.options import OptionError
from keras_vae.core.options import checked_value
from keras_vae.core.options import option

COLOR_MODES = ("auto", "grayscale", "rgb")


#: Default memory budget for decoded images (float32) of an image folder, in MB (10^6 bytes).
DEFAULT_MEMORY_BUDGET_MB = 2000.0


@dataclasses.dataclass
class ImageOptions:
    """How an image folder is read (`keras_vae.data.image_folder`); other datasets ignore them.

    `keras_vae.training.TrainConfig` extends it, as it does `ModelOptions`, and
    `keras-vae train` has one flag per field. Constructing one converts and checks
    the values (`OptionError`).
    """

    image_size: tuple[int, ...] = option(
        (), "image folders: centre-crop each image to the aspect ratio H:W, then resize it "
            "to H x W (bilinear); without it every file must have one size", minimum=1)
    color_mode: str = option(
        "auto", "image folders: grayscale (1 channel) or rgb (3); auto takes the files' own, "
                "which must agree", choices=COLOR_MODES)
    memory_budget_mb: float = option(
        DEFAULT_MEMORY_BUDGET_MB, "image folders: decoded (float32) images up to this many MB are held in "
                "memory, larger folders stream from disk batch by batch (0: always stream)", minimum=0)

    def __post_init__(self):
        for field in dataclasses.fields(ImageOptions):
            setattr(self, field.name, checked_value(field, getattr(self, field.name)))
        if len(self.image_size) not in (0, 2):
            raise OptionError("image_size", "two integers, H W", self.image_size)

    def image_kwargs(self):
        """The image options as {name: value}: keyword arguments of `keras_vae.data.load_dataset`."""
        return {"image_size": self.image_size or None, "color_mode": self.color_mode,
                "memory_budget_mb": self.memory_budget_mb}


IMAGE_OPTION_NAMES = tuple(field.name for field in dataclasses.fields(ImageOptions))
