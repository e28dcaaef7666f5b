"""`keras-vae train` as a script: `python pipelines/train.py --help` (see :mod:`keras_vae.commands.train`)."""

import sys

from keras_vae.commands.train import main

if __name__ == "__main__":
    sys.exit(main())
