"""The two-device half of tests/test_data_parallel.py, run in a subprocess.

Started with ``KERAS_BACKEND=jax`` and ``XLA_FLAGS=--xla_force_host_platform_device_count=2``
(JAX fixes its device count when it starts). For each case it trains the same model from the
same initial weights twice on the same plan: on one device (no distribution), then under
``keras.distribution.DataParallel`` over both devices, and writes to ``argv[1]`` the largest
difference between the final weights, whether every batch of the data-parallel run split over
the devices, and whether it held fill rows.
"""

import importlib.util
import json
import sys

import jax
import keras
import numpy as np

import seqprep as sp

EPOCHS = 2


# Pooling with or without a mask: a fill row holds one step of the data that is not padding,
# so a masked mean over it is finite (a row of padding only would give 0 / 0 = NaN).
def _pooled(per_step=False, mask=False):
    layers = [keras.Input((None, 2))]
    if mask:
        layers.append(keras.layers.Masking(0.0))
    if not per_step:
        layers.append(keras.layers.GlobalAveragePooling1D())
    layers.append(keras.layers.Dense(1))
    return keras.Sequential(layers)


def _masked_mean():
    return _pooled(mask=True)


def _packed_model(sampler):
    inputs = {
        "values": keras.Input((sampler.row_length, 2), name="values"),
        "segment_ids": keras.Input((sampler.row_length,), dtype="int32", name="segment_ids"),
        "segment_lengths": keras.Input((sampler.max_segments_,), dtype="int32",
                                       name="segment_lengths"),
    }
    hidden = sp.layers.PackedRNN(keras.layers.GRU(3))(inputs)
    return keras.Model(inputs, keras.layers.Dense(1)(hidden))


def _rnn():
    return keras.Sequential([keras.Input((None, 2)), keras.layers.Masking(0.0),
                             keras.layers.SimpleRNN(3), keras.layers.Dense(1)])


def _model(build):
    keras.utils.set_random_seed(7)
    model = build()
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    return model


def _data(n, lengths=None, seed=0):
    rng = np.random.default_rng(seed)
    if lengths is None:
        lengths = rng.integers(1, 12, n)
    x = [rng.normal(size=(int(length), 2)).astype(np.float32) + 1.0 for length in lengths]
    y = rng.normal(size=n).astype(np.float32)
    y_steps = [rng.normal(size=(int(length), 1)).astype(np.float32) for length in lengths]
    return np.asarray(lengths), x, y, y_steps


def _batch_rows(ds):
    return [int(np.asarray(b[-1]).shape[0]) for b in ds]  # the weights: every case has them


def _compare(build, fit, distribution=None):
    """Weights after ``fit`` on one device and under ``distribution`` (default: DataParallel
    over every device); the rows of the data-parallel run's batches (recorded by ``fit``'s
    ``rows`` callback)."""
    keras.distribution.set_distribution(None)
    one = _model(build)
    fit(one, rows=None)
    keras.distribution.set_distribution(
        distribution or keras.distribution.DataParallel(devices=jax.devices()))
    try:
        two = _model(build)
        rows = []
        fit(two, rows=rows)
    finally:
        keras.distribution.set_distribution(None)
    diff = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
               for a, b in zip(one.get_weights(), two.get_weights(), strict=True))
    return diff, rows


def _dataset_case(build, make_ds, planned_sizes):
    def fit(model, rows):
        ds = make_ds()
        if rows is not None:
            rows.extend(_batch_rows(make_ds()))
        model.fit(ds, epochs=EPOCHS, verbose=0)

    diff, rows = _compare(build, fit)
    return {"max_weight_diff": diff, "divisible": all(r % 2 == 0 for r in rows),
            "had_fill": rows != planned_sizes}


def main(out):
    cases = {}
    lengths, x, y, y_steps = _data(67)

    sampler = sp.BucketSampler(lengths, boundaries=[6], batch_size=30, seed=3)
    sizes = [b.size for b in sampler.plan(0)]
    assert any(s % 2 for s in sizes), sizes  # a partial batch of odd size
    cases["batch_size=30"] = _dataset_case(
        _rnn, lambda: sp.bucketed_dataset(x, y, sampler=sampler, pad_to=11), sizes)

    tokens = sp.BucketSampler(lengths, boundaries=[4, 8], max_tokens=60, seed=3)
    sizes = [b.size for b in tokens.plan(0)]
    # A masked mean: 0 / 0 on a fill row of padding only; finite on the fill row's one step.
    cases["max_tokens, masked mean"] = _dataset_case(
        _masked_mean, lambda: sp.bucketed_dataset(x, y, sampler=tokens, pad_to="bucket"), sizes)

    sizes = [b.size for b in sampler.plan(0)]
    cases["per-step, masked"] = _dataset_case(
        lambda: _pooled(per_step=True, mask=True),
        lambda: sp.bucketed_dataset(x, y_steps, sampler=sampler, pad_to=11), sizes)

    # Per-step targets weighed by one number per sequence (on each of its real steps), behind
    # a mask: the fill steps count in the mask's divisor, the weights are scaled for them.
    weights = np.linspace(0.5, 2.0, len(x)).astype(np.float32)
    cases["per-step, weight array, masked"] = _dataset_case(
        lambda: _pooled(per_step=True, mask=True),
        lambda: sp.bucketed_dataset(x, y_steps, sampler=sampler, pad_to=11,
                                    sample_weight=weights), sizes)

    cases["pydataset"] = _dataset_case(
        _pooled, lambda: sp.bucketed_pydataset(x, y, sampler=sampler, pad_to=11), sizes)


    # Grain: Keras restarts a Grain dataset every epoch; repeat() + steps_per_epoch plays the
    # sampler's epochs one after the other (see grain_dataset).
    def grain_fit(model, rows):
        ds = sp.grain_dataset(x, y, sampler=tokens, pad_to="bucket")
        if rows is not None:
            rows.extend(_batch_rows(ds))
        model.fit(ds.repeat(), epochs=EPOCHS, steps_per_epoch=len(ds), verbose=0)

    if importlib.util.find_spec("grain") is not None:  # only where Grain is installed
        diff, rows = _compare(_masked_mean, grain_fit)
        cases["grain"] = {"max_weight_diff": diff, "divisible": all(r % 2 == 0 for r in rows),
                          "had_fill": rows != [b.size for b in tokens.plan(0)]}

    # A PyTorch DataLoader with PadCollate(data_parallel="auto"): the layout read when the
    # collate runs (here, after set_distribution). Only where PyTorch is installed.
    if importlib.util.find_spec("torch") is not None:
        from torch.utils.data import DataLoader

        def loader():
            return DataLoader(list(zip(x, y, strict=True)), batch_sampler=sp.BucketSampler(
                lengths, boundaries=[6], batch_size=30, seed=3),
                collate_fn=sp.PadCollate(data_parallel="auto"))

        cases["pad_collate"] = _dataset_case(_masked_mean, loader, sizes)

    packer = sp.PackSampler(lengths, batch_size=5, seed=3)  # 5-row batches: always filled
    packed_rows = [int(r) for r in packer.plan(0).rows_per_batch]
    assert any(r % 2 for r in packed_rows), packed_rows
    cases["packed"] = _dataset_case(
        lambda: _packed_model(packer), lambda: sp.packed_dataset(x, y[:, None], sampler=packer),
        packed_rows)

    few = np.random.default_rng(5).choice([3, 5, 7], 37)
    lengths2, x2, y2, y2_steps = _data(37, lengths=few, seed=5)
    plan = sp.plan_per_length(lengths2, batch_size=8, seed=1)
    planned = [b.size for b in plan]
    assert any(s % 2 for s in planned), planned

    def per_length(y_fit, sample_weight=None):
        def fit(model, rows):
            sp.fit_per_length(model, x2, y_fit, epochs=EPOCHS, batch_size=8, seed=1, verbose=0,
                              sample_weight=sample_weight)
        return fit

    # The last: exact-length groups without a mask, one weight per sequence (every position
    # divides the loss: the weights are scaled by rows / real rows).
    weights2 = np.linspace(0.5, 2.0, len(x2)).astype(np.float32)
    for name, build, y_fit, w_fit in (
            ("fit_per_length, masked mean", _masked_mean, y2, None),
            ("fit_per_length, step", lambda: _pooled(per_step=True), y2_steps, None),
            ("fit_per_length, step, weight array", lambda: _pooled(per_step=True), y2_steps,
             weights2)):
        diff, _ = _compare(build, per_length(y_fit, w_fit))
        # A batch whose rows did not split over the devices fails in JAX (IndivisibleError):
        # the run finishing is the check; the plan has odd batches, so fill rows were needed.
        cases[name] = {"max_weight_diff": diff, "divisible": True,
                       "had_fill": any(s % 2 for s in planned)}

    with open(out, "w") as f:
        json.dump({"devices": jax.device_count(), "cases": cases}, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1])
