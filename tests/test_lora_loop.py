"""How a training step's rows are cut into passes through the model."""

from __future__ import annotations

import numpy as np

from workhorse.flywheel.lora_loop import passes


def test_passes_keep_every_row_in_order_within_the_token_bound() -> None:
    lengths = [10, 20, 30, 40, 50, 300]
    batch = np.array([0, 1, 2, 3, 4, 5])
    runs = passes(batch, lengths, 100)
    assert np.concatenate(runs).tolist() == batch.tolist()
    for run in runs:
        assert len(run) * max(lengths[i] for i in run) <= 100 or len(run) == 1
    assert [len(run) for run in runs] == [3, 2, 1]  # 3 × 30, 2 × 50, then the long row alone


def test_a_bound_larger_than_the_batch_is_one_pass() -> None:
    batch = np.array([4, 2, 0])
    assert [run.tolist() for run in passes(batch, [5] * 5, 2048)] == [[4, 2, 0]]
