"""`keras-vae export` as a script: `python pipelines/export.py --help` (see :mod:`keras_vae.commands.export`)."""

import sys

from keras_vae.commands.export import main

if __name__ == "__main__":
    sys.exit(main())
