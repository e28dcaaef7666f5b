"""SIGINT and SIGTERM during training: a stop at the next step boundary that keeps the run
resumable, and a resumed run equal to an uninterrupted one.

The in-process tests send the signal to the test's own process from a callback at a chosen
step; the command-line tests start `keras-vae train`, signal it while it trains, and run the
same command again.
"""

import csv
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import keras

from helpers.processes import ROOT
from keras_vae.training.callbacks import StopOnSignal
from keras_vae.training.callbacks import TrainingStopped
from keras_vae.training.run import TrainConfig
from keras_vae.training.run import train

pytestmark = pytest.mark.backend

# 1,294 training images in batches of 256: 6 steps an epoch.
STEPS = 6
OPTIONS = dict(epochs=3, latent_dim=4, hidden_units=(32,), batch_size=256, verbose=0, ema=0.8,
               lr=3e-3, kl_warmup_steps=5)


def config_in(out):
    return TrainConfig(out=str(out), **OPTIONS)


def history(run_dir):
    path = os.path.join(run_dir, "history.csv")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return list(csv.DictReader(f))


def committed_epoch(run_dir):
    with open(os.path.join(run_dir, "backup", "training_metadata.json")) as f:
        return json.load(f)["epoch"]


def trainable(model):
    return [np.array(keras.ops.convert_to_numpy(v)) for v in model.trainable_variables]


class SendSignal(keras.callbacks.Callback):
    """Sends `signum` to this process (`times` times) at the end of step `step` (from 0) of
    epoch `epoch` (from 0), as a user or a scheduler would while that step ran."""

    def __init__(self, epoch, step, signum, times=1):
        super().__init__()
        self.at, self.signum, self.times = (epoch, step), signum, times
        self.epoch = None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self.epoch, batch) == self.at:
            for _ in range(self.times):
                # To the main thread, then wait until the handler has run: signals that arrive
                # before it runs count once (CPython keeps one flag per signal).
                signal.pthread_kill(threading.main_thread().ident, self.signum)
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    time.sleep(0.01)
                    running = StopOnSignal.running
                    if running is None or running.requested:
                        break


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """An uninterrupted run: its history and final weights."""
    out = tmp_path_factory.mktemp("straight") / "run"
    vae = train(config_in(out))
    return history(out), trainable(vae)


@pytest.mark.parametrize("signum, step", [(signal.SIGINT, 2), (signal.SIGTERM, STEPS - 2)],
                         ids=["SIGINT mid-epoch", "SIGTERM in an epoch's last step"])
def test_a_signal_stops_at_the_next_step_and_the_run_resumes_exactly(
        tmp_path, uninterrupted, signum, step):
    """The signal arrives during step `step` + 1 (counted from 1) of the second epoch; training
    stops after the next step. In the middle of an epoch nothing of that epoch is written and
    the run resumes after the first; after an epoch's last step that epoch is committed. Either
    way the resumed run's history and weights (averaged, --ema) equal the uninterrupted run's."""
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    config = config_in(tmp_path / "run")
    with pytest.raises(TrainingStopped) as stopped:
        train(config, extra_callbacks=[SendSignal(1, step, signum)])
    stop = stopped.value
    assert (stop.signum, stop.epoch, stop.step, stop.steps) == (signum, 2, step + 2, STEPS)
    assert stop.exit_status == 128 + signum
    assert {s: signal.getsignal(s) for s in handlers} == handlers, "the handlers are restored"
    finished_epochs = 2 if stop.step == STEPS else 1
    assert stop.epoch_done == (finished_epochs == 2)
    assert [int(row["epoch"]) for row in history(config.out)] == list(range(finished_epochs))
    assert committed_epoch(config.out) == finished_epochs
    assert not os.path.exists(tmp_path / "run" / "samples.png"), "the run is not finished"
    if stop.epoch_done:
        assert str(stop) == (f"stopped after epoch 2 ({signal.Signals(signum).name}); run the "
                             "same command again to resume from epoch 3")
    else:
        assert str(stop) == (f"stopped at epoch 2, step {step + 2} of {STEPS} (SIGINT); run the "
                             "same command again to resume from the start of epoch 2")

    resumed = train(config)
    straight_history, straight_weights = uninterrupted
    assert len(history(config.out)) == len(straight_history) == OPTIONS["epochs"]
    for a, b in zip(straight_history, history(config.out)):
        for column in ("loss", "val_loss"):
            np.testing.assert_allclose(float(b[column]), float(a[column]), rtol=1e-5)
    for expected, got in zip(straight_weights, trainable(resumed)):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert not os.path.exists(tmp_path / "run" / "backup")


# --- the command line ---------------------------------------------------------------------

EPOCHS = 8  # enough that a signal 0.3 s after the first epoch lands before the last
LINE = re.compile(r"stopped (at once )?(?:at epoch (\d+), step (\d+) of (\d+)|after epoch (\d+)) "
                  r"\((?:a second signal, )?(SIGINT|SIGTERM)\); run the same command again to "
                  r"(?:resume from (?:the start of )?epoch \d+|write the final files)")


def command(out):
    # 1,294 images in batches of 16: 81 steps an epoch, so that a signal lands in an epoch.
    return [sys.executable, "-m", "keras_vae", "train", "--backend", keras.backend.backend(),
            "--hidden-units", "32", "--latent-dim", "4", "--batch-size", "16", "--epochs",
            str(EPOCHS), "--quiet", "--out", str(out)]


def environment():
    return dict(os.environ, KERAS_BACKEND=keras.backend.backend(), TF_CPP_MIN_LOG_LEVEL="3",
                PYTHONUNBUFFERED="1")


@pytest.mark.slow
@pytest.mark.parametrize("signals", [(signal.SIGINT,), (signal.SIGTERM,),
                                     (signal.SIGINT, signal.SIGTERM)],
                         ids=["SIGINT", "SIGTERM", "SIGINT then SIGTERM"])
def test_keras_vae_train_stops_on_a_signal_with_one_line_and_resumes(tmp_path, signals):
    """One signal stops at the next step boundary; a second one at once. Either way: exit
    128 + the last signal, one line on standard error saying where, a run directory that
    holds exactly the committed epochs, and the same command finishes the run."""
    out = tmp_path / "run"
    process = subprocess.Popen(command(out), cwd=ROOT, env=environment(), text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 900
    while len(history(out)) < 1 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, process.communicate()[1][-3000:]
    time.sleep(0.3)  # into the second epoch
    signalled = time.monotonic()
    for signum in signals:
        process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=900)
    names = " then ".join(signal.Signals(signum).name for signum in signals)
    print(f"{names}: exit {time.monotonic() - signalled:.1f} s after the signal")

    assert process.returncode == 128 + signals[-1], stderr[-3000:]
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr[-3000:]
    match = LINE.fullmatch(lines[0])
    assert match and match[6] == signal.Signals(signals[-1]).name, lines[0]
    assert bool(match[1]) == (len(signals) == 2), "a second signal stops at once"
    completed = committed_epoch(out)
    if match[5]:  # stopped after a complete epoch: it is committed
        assert completed == int(match[5])
    else:
        epoch, step, steps = int(match[2]), int(match[3]), int(match[4])
        assert steps == 81 and 1 <= step <= steps
        if match[1]:  # at once: an epoch's commit may have been cut short, as by kill -9
            assert completed in (epoch - 1, epoch)
        else:
            assert completed == (epoch - 1 if step < steps else epoch)
    assert completed >= 1
    assert [int(row["epoch"]) for row in history(out)] == list(range(completed))
    assert not os.path.exists(out / "samples.png")

    again = subprocess.run(command(out), cwd=ROOT, env=environment(), text=True,
                           capture_output=True, timeout=1800)
    assert again.returncode == 0, again.stderr[-3000:]
    assert [int(row["epoch"]) for row in history(out)] == list(range(EPOCHS))
    assert not os.path.exists(out / "backup") and os.path.exists(out / "samples.png")
