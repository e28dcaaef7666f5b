"""``python -m keras_vae.serving.explorer``: the same as ``keras-vae explore``."""

import sys

from keras_vae.serving.explorer.cli import main

sys.exit(main())
