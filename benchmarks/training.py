"""Training throughput: keras_vae.VAE against Keras' built-in fit and a plain PyTorch loop.

For each backend (its own process) and architecture, trains on MNIST (batch 128):
  keras_vae   keras_vae.VAE, its custom train_step, model.fit
  built-in    the same encoder/decoder as a functional model, compile(loss=...)/fit,
              with the KL added by add_loss (what a user would write without keras_vae)
and, in a process without Keras, the plain PyTorch loop of pytorch/examples `vae/main.py`
on the same networks and data (DataLoader, autograd, torch.optim.Adam).

Images/s is the median over --repeats timed passes through `--images` images, after a
first pass that compiles and warms up; keras_vae and built-in take turns, so both see the
same noise on a shared machine. Prints a Markdown table with ratios measured in this run.

With --rgb-folder (an image folder of 32×32×3 PNGs, e.g. coloured MNIST from
benchmarks/make_coloured_mnist.py), it measures instead the conv VAE on RGB images
(filters 32-64, latent 32, the discretized logistic decoder) on each backend, with each
way the decoder upsamples (--conv-upsampling transpose and subpixel), taking turns, and
prints each one's img/s against the fastest in the same run.

On the torch backend the Keras workers run once per --torch-settings entry (default
"keras-vae": what the keras-vae commands set, keras_vae.commands.threads; "unset": torch
as it starts; "NAME=VALUE+...": keras-vae's settings with these variables), and the plain
PyTorch loop runs with keras-vae's settings. --neighbour N runs N CPU-bound processes beside
every measurement.

examples:
  python benchmarks/training.py --data data/mnist.npz
  python benchmarks/training.py --data data/mnist.npz --architectures mlp --images 12800
  python benchmarks/make_coloured_mnist.py data/mnist.npz data/coloured_mnist
  python benchmarks/training.py --rgb-folder data/coloured_mnist --images 2560
  python benchmarks/training.py --data data/mnist.npz --architectures conv --neighbour 1 \\
      --torch-settings unset,keras-vae,KERAS_VAE_TORCH_THREADS=0
"""

import argparse
import json
import os
import statistics
import sys
import time

from common import BACKENDS
from common import add_torch_options
from common import cpu_name
from common import machine_line
from common import markdown_table
from common import neighbour_phrase
from common import neighbours
from common import peak_rss_mib
from common import run_worker
from common import start_torch_threads
from common import torch_setting_environment

BATCH_SIZE = 128
LATENT_DIM = 16


def load_images(data, count):
    import numpy as np

    from keras_vae.data.datasets import to_unit_float

    with np.load(data) as archive:
        return to_unit_float(archive["x_train"][:count])


def load_images_without_keras(data, count):
    import numpy as np

    with np.load(data) as archive:
        return (archive["x_train"][:count].astype("float32") / 255.0)[..., None]


# === Keras workers (KERAS_BACKEND chooses the backend) ===

def builtin_model(architecture):
    """The same networks as keras_vae.VAE, trained with compile(loss=...) and add_loss."""
    import keras
    from keras import ops

    from keras_vae.models.networks import build_decoder
    from keras_vae.models.networks import build_encoder

    class SampleWithKL(keras.layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.seed_generator = keras.random.SeedGenerator(0)

        def call(self, inputs):
            z_mean, z_log_var = inputs
            kl = 0.5 * ops.sum(ops.square(z_mean) + ops.exp(z_log_var) - 1.0 - z_log_var, axis=-1)
            self.add_loss(ops.mean(kl))
            epsilon = keras.random.normal(ops.shape(z_mean), seed=self.seed_generator)
            return z_mean + ops.exp(0.5 * z_log_var) * epsilon

    def bernoulli_nll(x, logits):
        return ops.sum(ops.softplus(logits) - x * logits, axis=(1, 2, 3))

    encoder = build_encoder((28, 28, 1), LATENT_DIM, architecture, (512, 512), (32, 64))
    decoder = build_decoder((28, 28, 1), LATENT_DIM, architecture, (512, 512), (32, 64))
    x = keras.Input((28, 28, 1))
    logits = decoder(SampleWithKL()(encoder(x)))
    model = keras.Model(x, logits)
    model.compile(optimizer="adam", loss=bernoulli_nll)
    return model


def seconds_per_epoch(model, x, y):
    """Wall seconds of one `fit` epoch over x (the epoch itself, not fit's set-up)."""
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds = time.perf_counter() - self.started

    timer = EpochTimer()
    model.fit(x, y, epochs=1, batch_size=BATCH_SIZE, callbacks=[timer], verbose=0)
    return timer.seconds


def keras_worker(args):
    start_torch_threads()
    import keras

    import keras_vae

    x = load_images(args.data, args.images)
    results = {}
    for architecture in args.architectures.split(","):
        vae = keras_vae.VAE(input_shape=(28, 28, 1), latent_dim=LATENT_DIM, architecture=architecture)
        vae.compile(optimizer="adam")
        contenders = {"keras_vae": (vae, None), "built-in": (builtin_model(architecture), x)}
        for model, y in contenders.values():
            seconds_per_epoch(model, x, y)  # compiles and warms up
        # Alternate the two, so that a noisy stretch on a shared machine hits both alike.
        speeds = {name: [] for name in contenders}
        for _ in range(args.repeats):
            for name, (model, y) in contenders.items():
                speeds[name].append(len(x) / seconds_per_epoch(model, x, y))
        for name, values in speeds.items():
            results[f"{architecture}/{name}"] = statistics.median(values)
        keras.utils.clear_session()
    results["peak_rss_mib"] = peak_rss_mib()
    print(json.dumps(results))


UPSAMPLINGS = ("transpose", "subpixel")
RGB_LATENT_DIM = 32


def rgb_worker(args):
    """img/s of the conv VAE on the folder's first --images training images, per upsampling."""
    start_torch_threads()
    import keras

    import keras_vae
    from keras_vae.data.image_folder import scan

    files = scan(args.rgb_folder, "train")
    x = files.subset(range(min(args.images, len(files)))).read()
    models = {}
    for upsampling in UPSAMPLINGS:
        vae = keras_vae.VAE(input_shape=x.shape[1:], latent_dim=RGB_LATENT_DIM, architecture="conv",
                            conv_filters=(32, 64), conv_upsampling=upsampling,
                            likelihood="discretized_logistic", seed=0)
        vae.compile(optimizer="adam")
        seconds_per_epoch(vae, x[: 2 * BATCH_SIZE], None)  # compiles and warms up
        models[upsampling] = vae
    speeds = {name: [] for name in models}
    for _ in range(args.repeats):  # taking turns, as keras_worker does
        for name, vae in models.items():
            speeds[name].append(len(x) / seconds_per_epoch(vae, x, None))
    results = {f"rgb/{name}": statistics.median(values) for name, values in speeds.items()}
    results.update(peak_rss_mib=peak_rss_mib(), images=len(x), shape=list(x.shape[1:]))
    keras.utils.clear_session()
    print(json.dumps(results))


def rgb_table(args):
    """Runs rgb_worker under each backend and prints the table."""
    common = ["--rgb-folder", args.rgb_folder, "--images", str(args.images),
              "--repeats", str(args.repeats)]
    measured = {}
    for backend, setting in backend_rows(args):
        print(f"measuring {row_name(backend, setting)} ...", file=sys.stderr, flush=True)
        measured[row_name(backend, setting)] = run_worker(
            __file__, ["--worker", "rgb", *common], backend,
            environment=torch_setting_environment(setting))
    fastest = max(results[f"rgb/{u}"] for results in measured.values() for u in UPSAMPLINGS)
    rows = [[backend, upsampling, f"{results[f'rgb/{upsampling}']:,.0f}",
             f"{fastest / results[f'rgb/{upsampling}']:.2f}×", f"{results['peak_rss_mib']:,.0f}"]
            for upsampling in UPSAMPLINGS for backend, results in measured.items()]
    shape = "×".join(map(str, next(iter(measured.values()))["shape"]))
    print(f"Training throughput, conv VAE on {shape} images ({args.rgb_folder}), filters 32-64, "
          f"latent {RGB_LATENT_DIM}, discretized logistic decoder, batch {BATCH_SIZE}, median of "
          f"{args.repeats} passes of {args.images:,} images; {conditions(args)}\n")
    print(markdown_table(["backend", "--conv-upsampling", "img/s", "time against the fastest",
                          "peak RSS MiB"], rows))


def backend_rows(args):
    """(backend, torch setting) per row: torch once per --torch-settings entry."""
    return [(backend, setting) for backend in args.backends.split(",")
            for setting in (args.torch_settings.split(",") if backend == "torch" else ["keras-vae"])]


def row_name(backend, setting):
    """A row's backend cell: torch under a setting other than keras-vae's says which."""
    return backend if setting == "keras-vae" else f"{backend} ({setting.replace('+', ', ')})"


def conditions(args):
    """The neighbours, the load average and the machine, for a table's header."""
    return (f"{neighbour_phrase(args.neighbour)}; 1-minute load average {args.load_before:.1f} before, "
            f"{os.getloadavg()[0]:.1f} after. {cpu_name()}; {machine_line()}")


# === The plain PyTorch loop (no Keras in this process) ===

def torch_networks(architecture):
    import torch
    from torch import nn

    class TorchVAE(nn.Module):
        def __init__(self):
            super().__init__()
            if architecture == "mlp":
                self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(784, 512), nn.ReLU(),
                                             nn.Linear(512, 512), nn.ReLU())
                self.decoder = nn.Sequential(nn.Linear(LATENT_DIM, 512), nn.ReLU(), nn.Linear(512, 512),
                                             nn.ReLU(), nn.Linear(512, 784), nn.Unflatten(1, (1, 28, 28)))
                features = 512
            else:
                self.encoder = nn.Sequential(nn.Conv2d(1, 32, 3, 2, 1), nn.ReLU(),
                                             nn.Conv2d(32, 64, 3, 2, 1), nn.ReLU(), nn.Flatten())
                self.decoder = nn.Sequential(
                    nn.Linear(LATENT_DIM, 7 * 7 * 64), nn.ReLU(), nn.Unflatten(1, (64, 7, 7)),
                    nn.ConvTranspose2d(64, 64, 3, 2, 1, output_padding=1), nn.ReLU(),
                    nn.ConvTranspose2d(64, 32, 3, 2, 1, output_padding=1), nn.ReLU(),
                    nn.Conv2d(32, 1, 3, padding=1))
                features = 7 * 7 * 64
            self.z_mean = nn.Linear(features, LATENT_DIM)
            self.z_log_var = nn.Linear(features, LATENT_DIM)

        def forward(self, x):
            h = self.encoder(x)
            mu, logvar = self.z_mean(h), self.z_log_var(h)
            z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
            return self.decoder(z), mu, logvar

    return TorchVAE()


def torch_loop_worker(args):
    start_torch_threads()
    import numpy as np
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader
    from torch.utils.data import TensorDataset

    images = load_images_without_keras(args.data, args.images)
    x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))  # (N, 1, 28, 28)
    loader = DataLoader(TensorDataset(x), batch_size=BATCH_SIZE, shuffle=True)
    results = {}
    for architecture in args.architectures.split(","):
        model = torch_networks(architecture)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        speeds = []
        for epoch in range(1 + args.repeats):  # the first epoch warms up
            started = time.perf_counter()
            for (batch,) in loader:
                optimizer.zero_grad()
                logits, mu, logvar = model(batch)
                bce = F.binary_cross_entropy_with_logits(logits, batch, reduction="sum")
                kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
                ((bce + kld) / len(batch)).backward()
                optimizer.step()
            speeds.append(len(x) / (time.perf_counter() - started))
        results[f"{architecture}/torch-loop"] = statistics.median(speeds[1:])
    results["peak_rss_mib"] = peak_rss_mib()
    print(json.dumps(results))


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="an .npz with x_train (e.g. mnist.npz)")
    parser.add_argument("--rgb-folder", help="measure the conv VAE on this folder of RGB images "
                                             "instead (e.g. coloured MNIST)")
    parser.add_argument("--images", type=int, default=6_400,
                        help="training images per timed pass (default: 6400 = 50 steps)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed passes per model, alternating keras_vae and built-in; "
                             "the table shows the median (default: 3)")
    parser.add_argument("--architectures", default="mlp,conv")
    parser.add_argument("--backends", default=",".join(BACKENDS))
    add_torch_options(parser, "keras-vae")
    parser.add_argument("--worker", choices=["keras", "torch-loop", "rgb"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker == "keras":
        return keras_worker(args)
    if args.worker == "torch-loop":
        return torch_loop_worker(args)
    if args.worker == "rgb":
        return rgb_worker(args)

    if args.repeats < 1 or args.images < BATCH_SIZE:
        parser.error(f"--repeats must be at least 1 and --images at least {BATCH_SIZE}")
    for setting in args.torch_settings.split(","):
        try:
            torch_setting_environment(setting)
        except ValueError as exc:
            parser.error(str(exc))
    if not args.data and not args.rgb_folder:
        parser.error("pass --data (an MNIST .npz) or --rgb-folder")
    args.load_before = os.getloadavg()[0]
    with neighbours(args.neighbour):
        return rgb_table(args) if args.rgb_folder else mnist_table(args)


def mnist_table(args):
    """Runs keras_worker under each backend and the plain PyTorch loop; prints the table."""
    common = ["--data", args.data, "--images", str(args.images), "--repeats", str(args.repeats),
              "--architectures", args.architectures]
    measured = {}
    for backend, setting in backend_rows(args):
        print(f"measuring {row_name(backend, setting)} ...", file=sys.stderr, flush=True)
        measured[row_name(backend, setting)] = run_worker(
            __file__, ["--worker", "keras", *common], backend,
            environment=torch_setting_environment(setting))
    print("measuring the plain PyTorch loop ...", file=sys.stderr, flush=True)
    torch_loop = run_worker(__file__, ["--worker", "torch-loop", *common], "torch")

    rows = []
    for architecture in args.architectures.split(","):
        reference = torch_loop[f"{architecture}/torch-loop"]
        for backend, results in measured.items():
            ours, builtin = results[f"{architecture}/keras_vae"], results[f"{architecture}/built-in"]
            rows.append([architecture, backend, f"{ours:,.0f}", f"{builtin:,.0f}",
                         f"{builtin / ours:.2f}×", f"{reference:,.0f}", f"{ours / reference:.2f}×",
                         f"{results['peak_rss_mib']:,.0f}"])
    print(f"Training throughput, MNIST 28×28, batch {BATCH_SIZE}, latent {LATENT_DIM}, "
          f"median of {args.repeats} passes of {args.images:,} images; the plain PyTorch loop "
          f"with keras-vae's torch settings; {conditions(args)}\n")
    print(markdown_table(
        ["arch", "backend", "keras_vae img/s", "built-in fit img/s",
         "time keras_vae / built-in", "plain PyTorch loop img/s", "keras_vae / PyTorch loop",
         "peak RSS MiB"], rows))
    print(f"\nPlain PyTorch loop peak RSS: {torch_loop['peak_rss_mib']:,.0f} MiB")


if __name__ == "__main__":
    main()
