"""Hypothesis strategies and data builders shared by several test files (import as
``from _strategies import ...``; pytest puts ``tests/`` on ``sys.path``)."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from seqprep.planning._windows import ORDERS, plan_tbptt


@st.composite
def tbptt_plans(draw, dense: bool = False):
    """``(lengths, plan)``: a random ``plan_tbptt`` plan (windowed, or ``dense``) of up to 30
    sequences of length 0..40, with the lengths it was planned from."""
    lengths = draw(st.lists(st.integers(0, 40), min_size=1, max_size=30), label="lengths")
    window = draw(st.integers(1, 12), label="window")
    batch_size = draw(st.integers(1, 6), label="batch_size")
    order = draw(st.sampled_from(ORDERS), label="order")
    seed = draw(st.integers(0, 2**31), label="seed")
    plan = plan_tbptt(
        lengths, window=window, batch_size=batch_size, order=order, seed=seed, dense=dense
    )
    return np.asarray(lengths), plan


def executor_data(n: int, seed: int = 0, max_len: int = 30):
    """``(x, y_seq, y_step)`` for comparing executors: ``n`` int32 token sequences of length
    1..max_len-1, one float64 label per sequence (executors must cast it to float32) and
    per-step float64 targets ``(length, 2)``."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, max_len, n)
    x = [rng.integers(1, 50, k).astype(np.int32) for k in lengths]
    y_seq = rng.random(n)
    y_step = [rng.random((k, 2)) for k in lengths]
    return x, y_seq, y_step
