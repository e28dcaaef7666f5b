"""`keras-vae score` as a script: `python pipelines/score.py --help` (see :mod:`keras_vae.commands.score`)."""

import sys

from keras_vae.commands.score import main

if __name__ == "__main__":
    sys.exit(main())
