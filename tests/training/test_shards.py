"""Each process's share of the batches, and the launcher's pieces (no processes started)."""

import numpy as np
import pytest

from keras_vae.commands.train import without_option
from keras_vae.training.launcher import process_environments
from keras_vae.training.shards import ProcessBatches


def test_the_processes_slices_make_up_the_global_batches_in_order():
    x, y = np.arange(20).reshape(20, 1), np.arange(20) * 10
    whole = ProcessBatches((x, y), 8)
    parts = [ProcessBatches((x, y), 8, process_index=p, num_processes=2) for p in (0, 1)]
    assert len(whole) == len(parts[0]) == 3
    for i in range(3):
        joined = np.concatenate([parts[0][i][0], parts[1][i][0]])
        np.testing.assert_array_equal(joined, whole[i][0])
        np.testing.assert_array_equal(parts[1][i][1], parts[1][i][0][:, 0] * 10)
    assert len(parts[0][2][0]) == 2  # the last batch of 4 rows, 2 per process


def test_shuffled_slices_follow_the_same_seeded_order_on_every_process():
    x = np.arange(32).reshape(32, 1)
    seen = []
    for p in (0, 1):
        batches = ProcessBatches((x,), 8, process_index=p, num_processes=2, shuffle=True, seed=3)
        epoch = [batches[i][0] for i in range(len(batches))]
        batches.set_epoch(1)
        seen.append((epoch, [batches[i][0] for i in range(len(batches))]))
    for e in (0, 1):
        rows = np.concatenate([np.concatenate([seen[0][e][i], seen[1][e][i]])
                               for i in range(4)])[:, 0]
        assert sorted(rows) == list(range(32))  # every row once per epoch
    assert not np.array_equal(seen[0][0][0], seen[0][1][0])  # a new order each epoch


def test_an_epoch_s_order_depends_only_on_the_seed_and_the_epoch():
    """A run resumed at epoch 2 reads the batches an uninterrupted run reads in its epoch 2."""
    x = np.arange(50).reshape(50, 1)
    straight = ProcessBatches((x,), 16, shuffle=True, seed=7)
    for epoch in range(3):
        straight.set_epoch(epoch)
        order = np.concatenate([straight[i][0][:, 0] for i in range(len(straight))])
    resumed = ProcessBatches((x,), 16, shuffle=True, seed=7)
    resumed.set_epoch(2)
    np.testing.assert_array_equal(
        np.concatenate([resumed[i][0][:, 0] for i in range(len(resumed))]), order)
    other_seed = ProcessBatches((x,), 16, shuffle=True, seed=8)
    other_seed.set_epoch(2)
    assert not np.array_equal(other_seed[0][0][:, 0], resumed[0][0][:, 0])


def test_batches_that_do_not_split_across_the_processes_are_refused():
    with pytest.raises(ValueError, match="split evenly across 2 processes"):
        ProcessBatches((np.zeros((21, 1)),), 8, num_processes=2)


def test_the_launcher_gives_each_process_its_rank_and_every_address():
    envs = process_environments(3, base={})
    assert [e["KERAS_DISTRIBUTION_PROCESS_ID"] for e in envs] == ["0", "1", "2"]
    addresses = envs[0]["KERAS_DISTRIBUTION_JOB_ADDRESSES"].split(",")
    assert len(set(addresses)) == 3 and all(a.startswith("127.0.0.1:") for a in addresses)
    assert all(e["KERAS_DISTRIBUTION_NUM_PROCESSES"] == "3" for e in envs)


def test_the_launcher_passes_on_every_argument_but_its_own():
    argv = ["--num-processes", "2", "--epochs", "3", "--num-processes=4", "--out", "r"]
    assert without_option(argv, "--num-processes") == ["--epochs", "3", "--out", "r"]
