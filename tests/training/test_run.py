"""Training runs on the current backend: resuming, repeatability, divergence."""

import csv
import os

import numpy as np
import psutil
import pytest

import keras

from keras_vae.models.options import ModelOptions
from keras_vae.training.run import TrainConfig
from keras_vae.training.run import TrainingDiverged
from keras_vae.training.inputs import load_training_data
from keras_vae.training.run_directory import logged_values
from keras_vae.training.run import train

pytestmark = pytest.mark.backend


def small_config(out, **kwargs):
    options = dict(out=str(out), epochs=4, latent_dim=4, hidden_units=(32,), batch_size=256,
                   verbose=0)
    options.update(kwargs)
    return TrainConfig(**options)


def history(run_dir):
    with open(os.path.join(run_dir, "history.csv")) as f:
        return list(csv.DictReader(f))


class Interrupt(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 1:
            raise KeyboardInterrupt


def test_an_interrupted_run_resumes_where_it_stopped(tmp_path):
    rss_before_mib = psutil.Process().memory_info().rss / 2**20
    config = small_config(tmp_path / "run")
    with pytest.raises(KeyboardInterrupt):
        train(config, extra_callbacks=[Interrupt()])
    assert os.path.isdir(tmp_path / "run" / "backup")
    assert [int(row["epoch"]) for row in history(config.out)] == [0, 1]

    vae = train(config)  # the same command again
    assert [int(row["epoch"]) for row in history(config.out)] == [0, 1, 2, 3]
    elapsed = [float(row["elapsed_seconds"]) for row in history(config.out)]
    assert 0 < elapsed[0] and elapsed == sorted(elapsed), "training time carries on after resuming"
    cpu = [float(row["cpu_seconds"]) for row in history(config.out)]
    assert 0 < cpu[0] and cpu == sorted(cpu), "CPU time carries on after resuming"
    assert cpu[2] - cpu[1] < cpu[1] + 60, "the resumed process does not count its start twice"
    peaks = [float(row["peak_rss_mib"]) for row in history(config.out)]
    assert peaks == sorted(peaks) and peaks[0] >= rss_before_mib, "the process's peak memory"
    assert not os.path.exists(tmp_path / "run" / "backup")
    assert int(keras.ops.convert_to_numpy(vae.optimizer.iterations)) == 4 * 6  # 1294 images / 256


def test_a_finished_run_is_not_overwritten_by_accident(tmp_path):
    config = small_config(tmp_path / "run", epochs=1)
    train(config)
    with pytest.raises(FileExistsError, match="already holds a finished run"):
        train(config)
    config.overwrite = True
    train(config)
    assert len(history(config.out)) == 1


def test_the_same_seed_repeats_the_run(tmp_path):
    train(small_config(tmp_path / "a", epochs=2))
    train(small_config(tmp_path / "b", epochs=2))
    for a, b in zip(history(tmp_path / "a"), history(tmp_path / "b")):
        np.testing.assert_allclose(float(a["loss"]), float(b["loss"]), rtol=1e-5)
        np.testing.assert_allclose(float(a["val_loss"]), float(b["val_loss"]), rtol=1e-5)


def test_periodic_checkpoints_hold_the_model_of_their_epoch(tmp_path):
    config = small_config(tmp_path / "run", checkpoint_every=2)
    train(config)
    checkpoints = tmp_path / "run" / "checkpoints"
    assert sorted(os.listdir(checkpoints)) == ["epoch_0002.keras", "epoch_0004.keras"]
    last = keras.models.load_model(tmp_path / "run" / "last.keras").get_weights()
    at_4 = keras.models.load_model(checkpoints / "epoch_0004.keras").get_weights()
    at_2 = keras.models.load_model(checkpoints / "epoch_0002.keras").get_weights()
    for a, b in zip(last, at_4):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(last, at_2))


def test_a_diverging_run_stops_with_a_message(tmp_path):
    config = small_config(tmp_path / "run", lr=1e12, likelihood="gaussian", decoder_std=1e-3)
    with pytest.raises(TrainingDiverged, match="NaN or infinite"):
        train(config)


def test_validation_split_is_seeded_and_binarized_like_the_training_draws(tmp_path):
    x_train, x_val = load_training_data(small_config(tmp_path, dynamic_binarization=True))
    assert len(x_train) == 1293 and len(x_val) == 144
    assert set(np.unique(x_val)) == {0.0, 1.0}
    assert len(np.unique(x_train)) == 17  # training images stay grey: each step draws afresh
    again_train, again_val = load_training_data(small_config(tmp_path, dynamic_binarization=True))
    np.testing.assert_array_equal(x_val, again_val)


def test_without_a_validation_split_training_uses_every_image_and_keeps_the_last_model(tmp_path):
    config = small_config(tmp_path / "run", epochs=2, val_fraction=0.0)
    x_train, x_val = load_training_data(config)
    assert len(x_train) == 1437 and x_val is None  # the whole digits training split
    vae = train(config)
    assert len(history(config.out)) == 2
    assert logged_values(os.path.join(config.out, "history.csv"), "val_loss") == []
    assert int(keras.ops.convert_to_numpy(vae.optimizer.iterations)) == 2 * 6  # 1437 / 256
    for a, b in zip(keras.models.load_model(tmp_path / "run" / "model.keras").get_weights(),
                    vae.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert os.path.exists(tmp_path / "run" / "reconstructions.png")


def test_a_validation_fraction_outside_zero_to_one_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"val_fraction must be in \[0, 1\)"):
        load_training_data(small_config(tmp_path, val_fraction=1.0))


def test_steps_per_execution_trains_the_same_model(tmp_path):
    # Several steps per compiled call must not change the math: the same noise, warm-up and
    # updates, step for step, with a last call that holds fewer steps (6 steps an epoch, 4 a call).
    options = dict(epochs=2, objective="iwae", num_samples=3, kl_warmup_steps=7,
                   dynamic_binarization=True, prior="mixture", prior_components=3)
    if keras.backend.backend() == "torch":
        with pytest.raises(ValueError, match="must be 1 with the PyTorch backend"):
            train(small_config(tmp_path / "four", steps_per_execution=4, **options))
        return
    one = train(small_config(tmp_path / "one", **options))
    four = train(small_config(tmp_path / "four", steps_per_execution=4, **options))
    assert int(keras.ops.convert_to_numpy(four.steps_seen)) == 12
    for a, b in zip(one.weights, four.weights):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b),
                                   rtol=1e-4, atol=1e-5, err_msg=a.path)


def test_cpu_seconds_count_this_process_s_cpu_time(tmp_path):
    before = psutil.Process().cpu_times()
    train(small_config(tmp_path / "run", epochs=2))
    after = psutil.Process().cpu_times()
    spent = (after.user + after.system) - (before.user + before.system)
    cpu = [float(row["cpu_seconds"]) for row in history(tmp_path / "run")]
    assert 0 < cpu[0] < cpu[1] <= spent + 0.05, (cpu, spent)


class StopAfterEpoch(keras.callbacks.Callback):
    """Interrupts training at the end of `epoch`, before the backup (the last callback) commits it."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise KeyboardInterrupt


def trainable(model):
    return [np.array(keras.ops.convert_to_numpy(v)) for v in model.trainable_variables]


class RecordRawWeights(keras.callbacks.Callback):
    """The model's weights after every training step (the raw weights: during an epoch the
    model holds them, the averages are in the optimizer)."""

    def __init__(self):
        super().__init__()
        self.steps = []

    def on_train_batch_end(self, batch, logs=None):
        if keras.backend.backend() == "jax":
            self.model.jax_state_sync()
        self.steps.append(trainable(self.model))


@pytest.mark.parametrize("model", ["vae", "hierarchical"])
def test_averaged_weights_survive_resuming(tmp_path, model):
    """With --ema, the saved and returned model holds the moving average of the raw weights
    (checked against NumPy's average of the recorded steps), and an interrupted and resumed
    run equals an uninterrupted one: the raw weights it trains on and the averaged ones."""
    momentum = 0.8
    options = dict(ema=momentum, epochs=3, lr=3e-3, kl_warmup_steps=5)
    if model == "hierarchical":
        options.update(model="hierarchical", num_groups=2, latent_dim=2, width=16,
                       hidden_units=ModelOptions.hidden_units)
    recorder = RecordRawWeights()
    straight = train(small_config(tmp_path / "straight", **options), extra_callbacks=[recorder])

    average = recorder.steps[0]  # Keras starts the average at the first step's weights
    for weights in recorder.steps[1:]:
        average = [momentum * a + (1 - momentum) * w for a, w in zip(average, weights)]
    final = trainable(straight)
    for expected, got in zip(average, final):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)
    assert max(np.abs(a - b).max() for a, b in zip(final, recorder.steps[-1])) > 1e-4, \
        "the averaged weights differ from the last step's"
    saved = keras.models.load_model(tmp_path / "straight" / "model.keras")
    for expected, got in zip(final, trainable(saved)):
        np.testing.assert_allclose(got, expected, rtol=1e-6)

    config = small_config(tmp_path / "resumed", **options)
    with pytest.raises(KeyboardInterrupt):  # before epoch 1 is committed: resumes after epoch 0
        train(config, extra_callbacks=[StopAfterEpoch(1)])
    resumed = train(config)
    for a, b in zip(history(tmp_path / "straight"), history(tmp_path / "resumed")):
        for column in ("loss", "val_loss"):
            np.testing.assert_allclose(float(a[column]), float(b[column]), rtol=1e-5)
    for expected, got in zip(final, trainable(resumed)):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
