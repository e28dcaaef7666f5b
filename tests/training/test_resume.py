"""Training survives kill -9 at any moment, and resumes only the run it was asked to.

The main test kills `pipelines/train.py` with SIGKILL again and again (at start-up,
in the middle of an epoch, and while a file is being saved), then runs the same
command to the end and checks the run directory as a user would.
"""

import csv
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from helpers.processes import ROOT
from helpers.processes import run_python
from keras_vae.training import resume
from keras_vae.core.files import is_temp_file

pytestmark = pytest.mark.slow

EPOCHS = 30
KILLS = 12
TRAIN = ["pipelines/train.py", "--epochs", str(EPOCHS), "--hidden-units", "128",
         "--latent-dim", "4", "--checkpoint-every", "5", "--quiet"]


def history_epochs(path):
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


def temp_files(run_dir):
    """Temporary files that atomic writers have open right now (or that a kill left)."""
    found = []
    for directory in (run_dir, os.path.join(run_dir, "backup"), os.path.join(run_dir, "checkpoints")):
        if os.path.isdir(directory):
            found += [name for name in os.listdir(directory) if is_temp_file(name)]
    return found


def start_training(run_dir, train=TRAIN):
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.Popen([sys.executable, *train, "--out", run_dir], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_for(process, condition, timeout=120.0):
    """Polls every millisecond until condition() holds (True) or the process ends (False)."""
    deadline = time.monotonic() + timeout
    while process.poll() is None and time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.001)
    return False


def test_training_survives_kill_9_at_any_moment(tmp_path):
    run_dir = str(tmp_path / "run")
    rng = random.Random(0)
    moments = ["start-up", "mid-epoch", "during a save"] * (KILLS // 3)
    rng.shuffle(moments)
    killed = {"start-up": 0, "mid-epoch": 0, "during a save": 0}
    saves_cut = 0
    for moment in moments:
        process = start_training(run_dir)
        rows = len(history_epochs(os.path.join(run_dir, "history.csv")))
        if moment == "start-up":
            time.sleep(rng.uniform(0.0, 3.0))
        elif moment == "mid-epoch":  # a random moment after the next epoch ended
            wait_for(process, lambda: len(history_epochs(os.path.join(run_dir, "history.csv"))) > rows)
            time.sleep(rng.uniform(0.0, 0.4))
        else:
            wait_for(process, lambda: bool(temp_files(run_dir)))
        assert process.poll() is None, f"the run ended before the kill:\n{process.stderr.read()}"
        process.send_signal(signal.SIGKILL)
        process.wait()
        killed[moment] += 1
        saves_cut += bool(temp_files(run_dir))

    # Then the same command, until it finishes.
    for _ in range(3):
        finished = run_python([*TRAIN, "--out", run_dir], check=False)
        if finished.returncode == 0:
            break
    assert finished.returncode == 0, finished.stderr
    print(f"\n{sum(killed.values())} kills survived {killed}; {saves_cut} cut a save short")

    assert history_epochs(os.path.join(run_dir, "history.csv")) == list(range(EPOCHS))
    assert not os.path.exists(os.path.join(run_dir, "backup"))
    assert temp_files(run_dir) == []
    assert saves_cut >= killed["during a save"]
    assert sorted(os.listdir(os.path.join(run_dir, "checkpoints"))) == [
        f"epoch_{e:04d}.keras" for e in range(5, EPOCHS + 1, 5)]
    import keras

    import keras_vae.models.vae  # registers VAE for keras.saving.load_model

    for name in ("model.keras", "last.keras"):
        model = keras.saving.load_model(os.path.join(run_dir, name))
        assert isinstance(model, keras_vae.VAE)
        assert np.isfinite(model.sample(4, seed=0)).all()
    run_python(["pipelines/evaluate.py", run_dir, "--num-samples", "20"])
    assert os.path.exists(os.path.join(run_dir, "metrics.json"))


def test_resuming_with_other_options_names_them(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "backup").mkdir(parents=True)
    (run_dir / "config.json").write_text('{"epochs": 3, "lr": 0.001, "backend": "tensorflow", '
                                         '"hidden_units": [128], "overwrite": false}')
    result = run_python(["pipelines/train.py", "--epochs", "5", "--hidden-units", "128",
                         "--out", str(run_dir)], check=False)
    assert result.returncode == 1
    assert "holds an interrupted run with other options (epochs: 3 -> 5)" in result.stderr
    assert "lr" not in result.stderr.split("options")[1].split(")")[0]


def test_overwrite_starts_afresh_even_with_a_corrupt_backup(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "backup").mkdir(parents=True)
    (run_dir / "backup" / "epoch_0003.weights.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    (run_dir / "backup" / "training_metadata.json").write_text(
        '{"epoch": 3, "batch": 0, "weights": "epoch_0003.weights.h5"}')
    (run_dir / "history.csv").write_text("epoch,loss\n0,1.0\n1,0.9\n2,0.8\n")
    args = ["pipelines/train.py", "--epochs", "2", "--hidden-units", "32", "--quiet", "--out", str(run_dir)]
    stuck = run_python(args, check=False)
    assert stuck.returncode == 1
    assert "cannot restore the interrupted run" in stuck.stderr and "--overwrite" in stuck.stderr
    run_python([*args, "--overwrite"])
    assert history_epochs(run_dir / "history.csv") == [0, 1]
    assert not (run_dir / "backup").exists()


def test_history_keeps_each_committed_epoch_once(tmp_path):
    path = tmp_path / "history.csv"
    path.write_text("epoch,loss\n0,1.0\n1,0.9\n2,0.8\n3,0.7\n4,0.")  # row 4 cut short by a kill
    assert resume.keep_history_before(str(path), 3) == 3
    assert path.read_text() == "epoch,loss\n0,1.0\n1,0.9\n2,0.8\n"
    path.write_text("epoch,loss\n0,1.0\n1,0.9\n1,0.9\n")  # a duplicate cannot follow
    assert resume.keep_history_before(str(path), 5) == 2
    assert resume.keep_history_before(str(path), 0) == 0 and path.read_text() == ""


def test_leftovers_of_a_killed_run_are_removed_and_nothing_else(tmp_path):
    for name in (".model.0123456789ab.tmp.keras", ".history.abcdef012345.tmp.csv", "model.keras",
                 ".hidden", "notes.tmp"):
        (tmp_path / name).write_text("x")
    (tmp_path / "backup").mkdir()
    (tmp_path / "backup" / ".epoch_0001.0123456789ab.tmp.weights.h5").write_text("x")
    (tmp_path / ".backup.discarded.0123456789ab").mkdir()
    resume.remove_leftovers(str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == [".hidden", "backup", "model.keras", "notes.tmp"]
    assert os.listdir(tmp_path / "backup") == []


def test_a_second_process_cannot_train_in_the_same_directory(tmp_path):
    with resume.run_lock(str(tmp_path)):
        result = run_python(["pipelines/train.py", "--epochs", "1", "--out", str(tmp_path)],
                            check=False)
    assert result.returncode == 1 and "another process is training in" in result.stderr


def test_a_hierarchical_run_resumes_after_kill_9_in_the_middle_of_an_epoch(tmp_path):
    run_dir = str(tmp_path / "hierarchical")
    train = ["pipelines/train.py", "--model", "hierarchical", "--num-groups", "3", "--latent-dim",
             "4", "--width", "32", "--dynamic-binarization", "--epochs", "6", "--quiet"]
    history = os.path.join(run_dir, "history.csv")
    process = start_training(run_dir, train)
    assert wait_for(process, lambda: len(history_epochs(history)) >= 2), process.stderr.read()
    time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert history_epochs(history) and len(history_epochs(history)) < 6
    finished = start_training(run_dir, train)
    assert finished.wait(timeout=600) == 0, finished.stderr.read()
    assert history_epochs(history) == list(range(6)), "every epoch once, none lost or repeated"
    assert not os.path.exists(os.path.join(run_dir, "backup"))
    loaded = run_python(["-c", "import keras, keras_vae; "
                         f"m = keras.models.load_model({os.path.join(run_dir, 'model.keras')!r}); "
                         "print(type(m).__name__, m.num_groups)"], backend="jax")
    assert loaded.stdout.split()[-2:] == ["HierarchicalVAE", "3"]
