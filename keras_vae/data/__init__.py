"""Image data: datasets, image folders, streamed batches, images to score.

* ``keras_vae.data.datasets`` - `load_dataset`: the digits, a ``.npz``, a TFDS name or an
  image folder, as float32 (N, H, W, C) in [0, 1] (NumPy only).
* ``keras_vae.data.image_folder`` - a folder of PNG/JPEG files: splits, checks, decoding
  (NumPy and Pillow only).
* ``keras_vae.data.options`` - `ImageOptions`: how a folder is read (standard library only).
* ``keras_vae.data.sources`` - `load_images`: the images ``keras-vae score`` reads (no Keras).
* ``keras_vae.data.batches`` - `ImageFolderBatches`: a folder streamed to Keras (needs Keras).
* ``keras_vae.data.coloured_mnist`` - the coloured-MNIST benchmark folder.
"""

from keras_vae.core.lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {
    "load_dataset": "datasets", "ImageData": "datasets", "binarize": "datasets",
    "ImageOptions": "options", "load_images": "sources", "ImageFolderBatches": "batches",
})
