"""`keras-vae evaluate` as a script: `python pipelines/evaluate.py --help` (see :mod:`keras_vae.commands.evaluate`)."""

import sys

from keras_vae.commands.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
