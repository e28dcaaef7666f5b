"""Multi-process data-parallel training (JAX's distributed runtime, Gloo on CPU) on one machine."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from helpers.processes import ROOT
from helpers.processes import run_python

pytestmark = pytest.mark.slow

TWO_DEVICES = "--xla_force_host_platform_device_count=2"
LOSSES = ("loss", "kl_loss", "reconstruction_loss", "val_loss")


def history(run_dir):
    with open(os.path.join(run_dir, "history.csv")) as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def environment(**extra):
    env = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")
    env.pop("XLA_FLAGS", None)
    env.update(extra)
    return env


def train_command(*args):
    return [sys.executable, "-m", "keras_vae.commands.train", "--backend", "jax", "--quiet", *args]


def launch(*args, timeout=300):
    """`keras-vae train --num-processes 2 ARGS`: the launcher and its two processes."""
    return subprocess.run(train_command("--num-processes", "2", *args), cwd=ROOT, env=environment(),
                          capture_output=True, text=True, timeout=timeout)


def one_process_two_devices(*args):
    return subprocess.run(train_command("--data-parallel", *args), cwd=ROOT, timeout=300,
                          env=environment(XLA_FLAGS=TWO_DEVICES), capture_output=True, text=True)


def start_process(rank, port, *args):
    """One process of a 2-process run, started by hand as on two hosts; output to a file."""
    env = environment(KERAS_DISTRIBUTION_JOB_ADDRESSES=f"127.0.0.1:{port},127.0.0.1:{port + 1}",
                      KERAS_DISTRIBUTION_NUM_PROCESSES="2", KERAS_DISTRIBUTION_PROCESS_ID=str(rank))
    log = open(args[-1] + f".rank{rank}.log", "w")
    return subprocess.Popen(train_command("--data-parallel", *args[:-1]), cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT, text=True)


def log_of(out, rank):
    with open(f"{out}.rank{rank}.log") as f:
        return f.read()


def max_weight_difference(a, b):
    code = ("import sys, keras, keras_vae, numpy as np; "
            "w = [keras.models.load_model(p).get_weights() for p in sys.argv[1:]]; "
            "print(max(float(np.max(np.abs(x - y))) for x, y in zip(*w)))")
    result = run_python(["-c", code, a, b], backend="jax")
    return float(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def even_dataset(tmp_path_factory):
    """1,280 digits (1,152 train + 128 validation): every batch splits evenly in two."""
    from keras_vae.data.datasets import load_dataset

    path = tmp_path_factory.mktemp("data") / "digits.npz"
    np.savez(path, x_train=load_dataset("digits", "train").images[:1280],
             x_test=load_dataset("digits", "test").images)
    return str(path)


def test_two_processes_match_one_process_with_two_devices(even_dataset, tmp_path):
    args = ("--dataset", even_dataset, "--epochs", "2", "--dynamic-binarization")
    launched = launch(*args, "--out", str(tmp_path / "two"))
    assert launched.returncode == 0, launched.stdout[-3000:]
    single = one_process_two_devices(*args, "--out", str(tmp_path / "one"))
    assert single.returncode == 0, single.stderr[-3000:]

    # Process 0 alone wrote the run directory; config.json records the processes and devices.
    assert "[rank 1] Training done; process 0 wrote the run directory" in launched.stdout
    with open(tmp_path / "two" / "config.json") as f:
        record = json.load(f)
    assert record["num_processes"] == 2 and len(record["devices"]) == 2
    # Both processes end with the same weights (each hashes its own copy; all-gathered).
    digests = {line.split("sha256 ")[1].rstrip(")") for line in launched.stdout.splitlines()
               if "weights identical on every process" in line}
    assert len(digests) == 1, launched.stdout[-3000:]
    assert launched.stdout.count("weights identical on every process") == 2
    # The same global batches, the same noise for every example: the same numbers.
    two, one = history(tmp_path / "two"), history(tmp_path / "one")
    assert len(two) == len(one) == 2
    for a, b in zip(two, one):
        for name in LOSSES:
            assert a[name] == pytest.approx(b[name], rel=1e-5), name
    difference = max_weight_difference(str(tmp_path / "two" / "last.keras"),
                                       str(tmp_path / "one" / "last.keras"))
    print(f"max |weights of 2 processes - weights of 1 process x 2 devices| = {difference:.3g}")
    assert difference < 1e-5


def test_killing_one_process_stops_the_other_and_the_same_commands_resume(even_dataset, tmp_path):
    out, port = str(tmp_path / "run"), 23000 + os.getpid() % 20000
    args = ("--dataset", even_dataset, "--epochs", "4", "--out", out)
    processes = [start_process(rank, port, *args, str(tmp_path / "first")) for rank in (0, 1)]
    deadline = time.monotonic() + 240
    while not (os.path.exists(os.path.join(out, "history.csv"))
               and len(history(out)) >= 1) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert processes[0].poll() is None and processes[1].poll() is None
    time.sleep(0.3)  # into the second epoch
    processes[1].send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    processes[0].wait(timeout=60)
    seconds = time.monotonic() - killed_at
    print(f"process 0 stopped {seconds:.1f} s after process 1 was killed")
    assert seconds < 30
    assert processes[0].returncode != 0
    # the failed collective says so, or (first, on a loaded machine) JAX's heartbeat does
    log = log_of(tmp_path / "first", 0)
    assert ("another process of this run stopped" in log
            or "process 1 stopped answering (no heartbeat" in log), log

    processes = [start_process(rank, port + 2, *args, str(tmp_path / "again")) for rank in (0, 1)]
    for process in processes:
        assert process.wait(timeout=300) == 0, log_of(tmp_path / "again", 0)[-3000:]
    assert "Resuming after epoch" in log_of(tmp_path / "again", 0)
    assert [row["epoch"] for row in history(out)] == [0, 1, 2, 3]
    assert not os.path.exists(os.path.join(out, "backup"))
    evaluated = run_python(["-m", "keras_vae.commands.evaluate", out, "--dataset", even_dataset,
                            "--num-samples", "5", "--max-images", "100"], backend="jax", check=False)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]


def test_a_process_started_with_other_options_stops_both_naming_them(even_dataset, tmp_path):
    port = 43000 + os.getpid() % 20000
    out = str(tmp_path / "run")
    processes = [start_process(0, port, "--dataset", even_dataset, "--out", out,
                               str(tmp_path / "log")),
                 start_process(1, port, "--dataset", even_dataset, "--batch-size", "64",
                               "--out", out, str(tmp_path / "log"))]
    for rank, process in enumerate(processes):
        assert process.wait(timeout=120) != 0
        assert "batch_size: 128 on process 0, 64 on process 1" in log_of(tmp_path / "log", rank)
    assert not os.path.exists(os.path.join(out, "history.csv"))


def write_folder(folder, count=120, rng=np.random.default_rng(0)):
    os.makedirs(folder)
    for i in range(count):
        pixels = (rng.random((8, 8)) * 255).astype(np.uint8)
        Image.fromarray(pixels).save(os.path.join(folder, f"img_{i:03d}.png"))
    return str(folder)


def test_an_image_folder_streamed_from_disk_across_two_processes(tmp_path):
    folder = write_folder(tmp_path / "images")
    args = ("--dataset", folder, "--memory-budget-mb", "0", "--batch-size", "16", "--epochs", "2",
            "--dynamic-binarization", "--latent-dim", "2", "--hidden-units", "32", "--val-fraction", "0.3")
    launched = launch(*args, "--out", str(tmp_path / "two"))
    assert launched.returncode == 0, launched.stdout[-3000:]
    assert "[rank 1]" in launched.stdout and "streaming them from disk" in launched.stdout
    single = one_process_two_devices(*args, "--out", str(tmp_path / "one"))
    assert single.returncode == 0, single.stderr[-3000:]
    for a, b in zip(history(tmp_path / "two"), history(tmp_path / "one"), strict=True):
        for name in LOSSES:
            assert a[name] == pytest.approx(b[name], rel=1e-5), name


def test_the_launcher_fails_when_a_process_fails_and_torch_is_a_clear_error(tmp_path):
    failed = launch("--batch-size", "127", "--out", str(tmp_path / "run"), timeout=120)
    assert failed.returncode != 0
    assert "[rank 0] error: --batch-size 127 must divide evenly across the 2 devices" in failed.stdout
    torch = subprocess.run(
        [sys.executable, "-m", "keras_vae.commands.train", "--backend", "torch",
         "--num-processes", "2"], cwd=ROOT, env=environment(), capture_output=True, text=True)
    assert torch.returncode != 0
    assert "Keras has no multi-process distribution for 'torch'" in torch.stderr


def test_every_example_gets_its_own_noise_whichever_process_holds_it():
    def draw(env_list):
        processes = [subprocess.Popen([sys.executable, "tests/helpers/noise_draw.py"], cwd=ROOT,
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True) for env in env_list]
        outputs = [p.communicate(timeout=180) for p in processes]
        assert all(p.returncode == 0 for p in processes), outputs[0][1][-3000:]
        line = next(l for l in outputs[0][0].splitlines() if l.startswith("{"))
        return json.loads(line)

    from keras_vae.training.launcher import process_environments

    two = draw(process_environments(2, environment()))
    one = draw([environment(XLA_FLAGS=TWO_DEVICES)])
    assert two["processes"] == 2 and one["processes"] == 1
    losses = np.array(two["losses"])
    # Identical inputs: only the noise differs, and it differs for every example, including
    # between process 0's rows (0-3) and process 1's (4-7).
    assert len(set(np.round(losses, 4))) == 8, losses
    # The draw depends on the global batch only, not on how many processes hold it.
    np.testing.assert_allclose(losses, one["losses"], rtol=1e-5)
