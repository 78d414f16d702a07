"""Several ragged fields per example: each padded to its own width, targets aligned by lengths.

Every batch is checked against a numpy reference built from the plan alone: field ``f`` of
batch ``idx`` must equal ``pad_sequences([f[i] for i in idx])`` with that field's options, and
per-step targets and weights must follow the field whose lengths they share.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import seqprep as sp
from seqprep._core.options import Options
from seqprep.inputs import _stage as _inputs
from seqprep.running._pydataset import bucketed_pydataset


def _pairs(n: int, seed: int = 0, vocab: int = 20):
    """Encoder sources, decoder inputs and decoder outputs of unrelated lengths."""
    rng = np.random.default_rng(seed)
    src = [rng.integers(1, vocab, k).astype(np.int32) for k in rng.integers(1, 12, n)]
    dec_out = [rng.integers(1, vocab, k).astype(np.int32) for k in rng.integers(1, 9, n)]
    dec_in = [np.concatenate([[1], d[:-1]]).astype(np.int32) for d in dec_out]
    return src, dec_in, dec_out


def _pad(rows, padding="post", value=0, width=None, dtype=None):
    dtype = dtype if dtype is not None else np.asarray(rows[0]).dtype
    return sp.pad_sequences(rows, maxlen=width, padding=padding, value=value, dtype=dtype)


def _as_numpy(tree):
    if isinstance(tree, dict):
        return {k: np.asarray(v) for k, v in tree.items()}
    if isinstance(tree, tuple):
        return tuple(np.asarray(v) for v in tree)
    return np.asarray(tree)


def _tf_batches(ds):
    return [tuple(_as_numpy(t) for t in b) if isinstance(b, tuple) else (_as_numpy(b),)
            for b in ds]


def _py_batches(pyds):
    out = []
    for i in range(len(pyds)):
        b = pyds[i]
        out.append(tuple(_as_numpy(t) for t in b) if isinstance(b, tuple) else (_as_numpy(b),))
    return out


def _assert_tree_equal(a, b):
    assert type(a) is type(b)
    if isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            _assert_tree_equal(a[k], b[k])
    elif isinstance(a, tuple):
        assert len(a) == len(b)
        for u, v in zip(a, b, strict=True):
            _assert_tree_equal(u, v)
    else:
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------- exact batches


@pytest.mark.parametrize("executor", ["tf.data", "pydataset"])
@pytest.mark.parametrize("padding", ["post", {"encoder": "pre"}])
def test_each_field_equals_pad_sequences_of_its_planned_sequences(executor, padding):
    src, dec_in, dec_out = _pairs(40)
    sampler = sp.BucketSampler(sp.sequence_lengths(src), batch_size=8, seed=3)
    x = {"encoder": src, "decoder": dec_in}
    build = sp.bucketed_dataset if executor == "tf.data" else bucketed_pydataset
    ds = build(x, dec_out, sampler=sampler, sample_weight="timestep", padding=padding,
               value={"decoder": 7}, pad_to="batch")
    batches = _tf_batches(ds) if executor == "tf.data" else _py_batches(ds)
    enc_side = padding if isinstance(padding, str) else padding["encoder"]
    plan = sampler.plan(0)
    assert len(batches) == len(plan)
    for idx, (xb, yb, wb) in zip(plan, batches, strict=True):
        assert list(xb) == ["encoder", "decoder"]
        np.testing.assert_array_equal(xb["encoder"], _pad([src[i] for i in idx], enc_side))
        np.testing.assert_array_equal(xb["decoder"], _pad([dec_in[i] for i in idx], value=7))
        # Per-step targets follow the decoder (equal lengths), padded with 0, not 7.
        np.testing.assert_array_equal(yb, _pad([dec_out[i] for i in idx]))
        lengths = [len(dec_out[i]) for i in idx]
        np.testing.assert_array_equal(wb, sp.sequence_weights(lengths, maxlen=yb.shape[1]))
        assert xb["encoder"].dtype == np.int32 and wb.dtype == np.float32


@settings(max_examples=25, deadline=None)
@given(st.data())
def test_random_fields_targets_and_weights_align(data):
    n = data.draw(st.integers(1, 12), label="n")
    k = data.draw(st.integers(1, 3), label="fields")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16), label="seed"))
    fields = [[rng.integers(-5, 5, (int(m), 2)).astype(np.int64) for m in
               rng.integers(0 if j else 1, 7, n)] for j in range(k)]
    keyed = data.draw(st.booleans(), label="dict")
    keys = [f"f{j}" for j in range(k)] if keyed else list(range(k))
    sides = [data.draw(st.sampled_from(["pre", "post"]), label=f"side{j}") for j in range(k)]
    values = [data.draw(st.integers(-3, 3), label=f"value{j}") for j in range(k)]
    planned = data.draw(st.integers(0, k - 1), label="sampler field")
    aligned = data.draw(st.integers(0, k - 1), label="targets field")
    x = dict(zip(keys, fields, strict=True)) if keyed else tuple(fields)
    y = [rng.random(len(s)) for s in fields[aligned]]
    batch = data.draw(st.integers(1, 5), label="batch")
    # Prefix the planned field with one extra step so that it is the sampler's first match.
    sampler = sp.BucketSampler([len(s) for s in fields[planned]], batch_size=batch,
                               seed=data.draw(st.integers(0, 99), label="sampler seed"))
    first_match = next(j for j in range(k)
                       if [len(s) for s in fields[j]] == [len(s) for s in fields[planned]])
    def per(vals):
        return dict(zip(keys, vals, strict=True))

    ds = bucketed_pydataset(x, y, sampler=sampler, padding=per(sides), value=per(values),
                            sample_weight="timestep", pad_to="batch",
                            targets="step", options=Options(targets_field=keys[aligned]))
    for idx, b in zip(sampler.plan(0), _py_batches(ds), strict=True):
        xb, yb, wb = b
        assert isinstance(xb, dict if keyed else tuple)
        items = [xb[key] for key in keys]
        for j in range(k):
            expected = _pad([fields[j][i] for i in idx], sides[j], values[j])
            if not expected.size:  # a batch of only empty sequences pads to one step
                expected = np.full((len(idx), 1, 2), values[j], np.int64)
            np.testing.assert_array_equal(items[j], expected)
        lengths = [len(fields[aligned][i]) for i in idx]
        expected_y = _pad([y[i] for i in idx], sides[aligned], 0, dtype=np.float32)
        if not expected_y.size:  # one padded step, target 0 at weight 0
            expected_y = np.zeros((len(idx), 1), np.float32)
        np.testing.assert_array_equal(yb, expected_y.reshape(len(idx), -1))
        np.testing.assert_array_equal(
            wb, sp.sequence_weights(lengths, maxlen=yb.shape[1], padding=sides[aligned]))
        assert first_match <= planned


def test_tf_data_and_pydataset_give_the_same_batches_for_fields():
    src, dec_in, dec_out = _pairs(30, seed=1)
    sampler = sp.BucketSampler(sp.sequence_lengths(src), batch_size=4, seed=0)
    kw = dict(sampler=sampler, sample_weight="timestep_mean",
              pad_to={"encoder": "bucket", "decoder": 10})
    x = {"encoder": src, "decoder": dec_in}
    _tf, _py = _tf_batches(sp.bucketed_dataset(x, dec_out, **kw)), _py_batches(
        bucketed_pydataset(x, dec_out, **kw))
    for a, b in zip(_tf, _py, strict=True):
        for u, v in zip(a, b, strict=True):
            _assert_tree_equal(u, v)
    pads = sampler.plan(0).pad_lengths
    for (xb, _, _), pad in zip(_py, pads, strict=True):
        assert xb["encoder"].shape[1] == pad and xb["decoder"].shape[1] == 10


def test_an_int_pad_to_per_field_fixes_that_fields_static_shape():
    src, dec_in, dec_out = _pairs(10)
    sampler = sp.BucketSampler(sp.sequence_lengths(src), batch_size=4, shuffle=False)
    ds = sp.bucketed_dataset({"encoder": src, "decoder": dec_in}, dec_out, sampler=sampler,
                             pad_to={"decoder": 12})
    spec = ds.element_spec
    assert spec[0]["decoder"].shape.as_list() == [None, 12]
    assert spec[0]["encoder"].shape.as_list() == [None, None]
    assert spec[1].shape.as_list() == [None, None]  # the targets follow the decoder's gather


# --------------------------------------------------------------------------- structures


def test_tuple_fields_give_tuple_batches_and_dict_targets_give_dict_weights():
    src, dec_in, dec_out = _pairs(12)
    labels = np.arange(12) % 2
    sampler = sp.BucketSampler(sp.sequence_lengths(dec_in), batch_size=4, shuffle=False)
    ds = bucketed_pydataset((src, dec_in), {"steps": dec_out, "label": labels},
                            sampler=sampler, sample_weight="timestep")
    plan = sampler.plan(0)
    for idx, (xb, yb, wb) in zip(plan, _py_batches(ds), strict=True):
        assert isinstance(xb, tuple) and len(xb) == 2
        np.testing.assert_array_equal(xb[1], _pad([dec_in[i] for i in idx]))
        assert list(yb) == ["steps", "label"] and list(wb) == ["steps", "label"]
        np.testing.assert_array_equal(yb["label"], labels[idx])
        mask = sp.sequence_weights([len(dec_in[i]) for i in idx])
        np.testing.assert_array_equal(wb["steps"], mask)
        # A per-sequence target's timestep weights follow the first field (here: the tuple's
        # first item, src), its padding zeroed.
        np.testing.assert_array_equal(wb["label"], sp.sequence_weights([len(src[i]) for i in idx]))


def test_per_sequence_weights_take_the_structure_of_y():
    src, dec_in, dec_out = _pairs(8)
    w = np.linspace(0.5, 2.0, 8)
    sampler = sp.BucketSampler(sp.sequence_lengths(src), batch_size=4, shuffle=False)
    ds = bucketed_pydataset({"encoder": src, "decoder": dec_in}, (dec_out, np.ones(8)),
                            sampler=sampler, sample_weight=w)
    lengths = sp.sequence_lengths(dec_out)
    for idx, (_, yb, wb) in zip(sampler.plan(0), _py_batches(ds), strict=True):
        assert isinstance(yb, tuple) and isinstance(wb, tuple)
        for part in wb:
            want = w[idx].astype(np.float32)
            if part.ndim == 2:  # per-step targets: each sequence's weight on its real steps
                want = want[:, None] * sp.length_mask(lengths[idx], part.shape[1])
            np.testing.assert_array_equal(part, want)


def test_one_field_stays_plain_arrays_and_a_tuple_of_sequences_is_one_collection():
    x = ([1, 2, 3], [4], [5, 6])  # a tuple of sequences: one collection, as before
    sampler = sp.BucketSampler(sp.sequence_lengths(x), batch_size=3, shuffle=False)
    (xb,) = _py_batches(bucketed_pydataset(x, sampler=sampler))[0]
    idx = sampler.plan(0)[0]
    np.testing.assert_array_equal(xb, _pad([x[i] for i in idx]))
    assert xb.shape == (3, 3)


def test_targets_field_resolves_fields_of_equal_lengths():
    a = [[1, 2], [3, 4, 5]]
    b = [[6, 7], [8, 9, 1]]
    y = [[0.5, 0.5], [1.0, 1.0, 1.0]]
    sampler = sp.BucketSampler(sp.sequence_lengths(a), batch_size=2, shuffle=False)
    with pytest.raises(ValueError, match=r"several fields of `x` \(`x\['a'\]`, `x\['b'\]`\)"
                                         r".*\n- Pass targets_field="):
        bucketed_pydataset({"a": a, "b": b}, y, sampler=sampler)
    ds = bucketed_pydataset({"a": a, "b": b}, y, sampler=sampler,
                            options=Options(targets_field="b"),
                            padding={"b": "pre"}, sample_weight="timestep")
    _, yb, wb = ds[0]
    np.testing.assert_array_equal(yb, np.array([[0, 0.5, 0.5], [1, 1, 1]], np.float32))
    np.testing.assert_array_equal(wb, [[0, 1, 1], [1, 1, 1]])


def test_a_1d_sampler_truncates_only_its_field():
    src = [[1, 2, 3, 4, 5], [6], [7, 8]]
    dec = [[1, 2, 3, 4, 5, 6], [1], [1, 2]]
    sampler = sp.BucketSampler(sp.sequence_lengths(src), batch_size=3, shuffle=False,
                               max_length=3, overlong="truncate")
    ds = bucketed_pydataset({"src": src, "dec": dec}, sampler=sampler,
                            options=Options(truncating={"src": "pre"}))
    xb = ds[0]
    row = list(sampler.plan(0)[0]).index(0)
    np.testing.assert_array_equal(xb["src"][row], [3, 4, 5])
    np.testing.assert_array_equal(xb["dec"][row], [1, 2, 3, 4, 5, 6])
    assert xb["src"].shape[1] == 3 and xb["dec"].shape[1] == 6


# --------------------------------------------------------------------------- 2-D samplers


@pytest.mark.parametrize("structure", ["dict", "tuple"])
@pytest.mark.parametrize("pad_to", ["batch", "bucket", "grid"])
def test_a_2d_sampler_plans_every_field_and_each_pads_to_its_own_width(structure, pad_to):
    src, dec_in, dec_out = _pairs(60, seed=6)
    lens = {"encoder": sp.sequence_lengths(src), "decoder": sp.sequence_lengths(dec_in)}
    if structure == "dict":  # named columns map by name, whatever the order of x
        sampler = sp.BucketSampler(lens, batch_size=8, seed=2)
        x = {"decoder": dec_in, "encoder": src}
        fields = {"decoder": dec_in, "encoder": src}
    else:
        sampler = sp.BucketSampler(np.stack([lens["encoder"], lens["decoder"]], 1),
                                   batch_size=8, seed=2)
        x, fields = (src, dec_in), {0: src, 1: dec_in}
    columns = {"encoder": 0, "decoder": 1, 0: 0, 1: 1}
    grid = [4, 8, 12]
    ds = bucketed_pydataset(x, dec_out, sampler=sampler, sample_weight="timestep",
                            pad_to=grid if pad_to == "grid" else pad_to)
    plan = sampler.plan(0)
    for b, (idx, (xb, yb, wb)) in enumerate(zip(plan, _py_batches(ds), strict=True)):
        for key, field in fields.items():
            rows = [field[i] for i in idx]
            longest = max(map(len, rows))
            cover = plan.field_pad_lengths[b, columns[key]]
            width = {"batch": longest, "bucket": cover,
                     "grid": next(g for g in grid if g >= cover)}[pad_to]
            np.testing.assert_array_equal(xb[key], _pad(rows, width=width))
        dec_key = "decoder" if structure == "dict" else 1
        np.testing.assert_array_equal(yb, _pad([dec_out[i] for i in idx],
                                               width=xb[dec_key].shape[1]))
        np.testing.assert_array_equal(
            wb, sp.sequence_weights([len(dec_out[i]) for i in idx], maxlen=yb.shape[1]))


def test_auto_pad_to_on_a_compiling_backend_grids_each_field_of_a_2d_sampler():
    from seqprep.planning._shapes import resolve_pad_to

    src, dec_in, _ = _pairs(80, seed=7)
    lens = {"encoder": sp.sequence_lengths(src), "decoder": sp.sequence_lengths(dec_in)}
    sampler = sp.BucketSampler(lens, batch_size=8, seed=0)
    stage = _inputs.prepare({"encoder": src, "decoder": dec_in}, sampler=sampler,
                            sampler_type=sp.BucketSampler, pad_to="auto", backend="jax",
                            resolve_planned=resolve_pad_to)
    for epoch in range(3):
        widths = _inputs.batch_widths(sampler.plan(epoch), stage)
        for j, name in enumerate(["encoder", "decoder"]):
            grid = sp.width_grid(sampler, field=name)
            assert set(widths[:, j].tolist()) <= set(grid.tolist())


def test_2d_sampler_mismatches_are_clear_errors():
    src, dec_in, _ = _pairs(10)
    lens = np.stack([sp.sequence_lengths(src), sp.sequence_lengths(dec_in)], 1)
    sampler = sp.BucketSampler(lens, batch_size=4)
    with pytest.raises(ValueError, match=r"`sampler` plans 2 fields .*but `x` is one sequence "
                                         r"collection\.\n- Pass `x` as a dict or tuple"):
        bucketed_pydataset(src, sampler=sampler)
    with pytest.raises(ValueError, match=r"`sampler` plans 2 fields .*but `x` has 3"):
        bucketed_pydataset((src, dec_in, src), sampler=sampler)
    with pytest.raises(ValueError, match=r"other lengths than `x\[1\]`'s \(column 1 of its "
                                         r"lengths: sequence \d+ has"):
        bucketed_pydataset((src, src), sampler=sampler)
    named = sp.BucketSampler({"src": lens[:, 0], "tgt": lens[:, 1]}, batch_size=4)
    with pytest.raises(ValueError, match=r"built on the fields \['src', 'tgt'\], but `x` has "
                                         r"\['encoder', 'decoder'\]\n- Name"):
        bucketed_pydataset({"encoder": src, "decoder": dec_in}, sampler=named)


# --------------------------------------------------------------------------- fit_per_length


def test_fit_per_length_batches_group_by_the_first_field_and_pad_the_others():
    from seqprep.inputs._fit_table import prepare_fit_data
    from seqprep.running._fitting import _BatchSource

    src, dec_in, dec_out = _pairs(30, seed=8)
    data = prepare_fit_data({"encoder": src, "decoder": dec_in}, dec_out, pad_value=9)
    lengths = sp.sequence_lengths(src)
    plan = sp.plan_per_length(lengths, batch_size=4, seed=1)
    ds = _BatchSource(data, exact=True, step_weights=False).dataset(plan.rows, plan.splits)
    for idx, (xb, yb) in zip(plan, _tf_batches(ds), strict=True):
        assert len({int(lengths[i]) for i in idx}) == 1  # one encoder length: no padding
        np.testing.assert_array_equal(xb["encoder"], np.stack([src[i] for i in idx]))
        np.testing.assert_array_equal(xb["decoder"], _pad([dec_in[i] for i in idx], value=9))
        np.testing.assert_array_equal(yb, _pad([dec_out[i] for i in idx]))


@pytest.mark.slow
def test_fit_per_length_trains_a_two_input_model_with_validation():
    src, dec_in, dec_out = _pairs(24, seed=9, vocab=12)
    keras.utils.set_random_seed(0)
    model = _seq2seq(vocab=12)
    x = {"encoder": src, "decoder": dec_in}
    history = sp.fit_per_length(model, x, dec_out, epochs=2, batch_size=8, group_by=[4, 8],
                                validation_data=(x, dec_out), verbose=0)
    assert len(history.history["val_loss"]) == 2
    assert np.isfinite(history.history["loss"]).all()


# --------------------------------------------------------------------------- training


def _seq2seq(vocab: int = 20, units: int = 8) -> keras.Model:
    enc_in = keras.Input((None,), dtype="int32", name="encoder")
    dec_in = keras.Input((None,), dtype="int32", name="decoder")
    enc = keras.layers.Embedding(vocab, 8, mask_zero=True)(enc_in)
    _, state = keras.layers.GRU(units, return_state=True)(enc)
    dec = keras.layers.Embedding(vocab, 8, mask_zero=True)(dec_in)
    dec = keras.layers.GRU(units, return_sequences=True)(dec, initial_state=state)
    out = keras.layers.Dense(vocab)(dec)
    model = keras.Model({"encoder": enc_in, "decoder": dec_in}, out)
    model.compile(optimizer=keras.optimizers.Adam(0.05),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


@pytest.mark.slow
def test_a_two_input_model_fits_on_bucketed_dataset_and_learns():
    src, dec_in, dec_out = _pairs(64, seed=4, vocab=12)
    # Learnable: the decoder repeats the source's first token.
    dec_out = [np.full(len(d), s[0], np.int32) for s, d in zip(src, dec_out, strict=True)]
    sampler = sp.BucketSampler(sp.sequence_lengths(src), batch_size=16, seed=0)
    ds = sp.bucketed_dataset({"encoder": src, "decoder": dec_in}, dec_out, sampler=sampler,
                             sample_weight="timestep")
    keras.utils.set_random_seed(0)
    model = _seq2seq(vocab=12)
    history = model.fit(ds, epochs=8, verbose=0)
    loss = history.history["loss"]
    assert np.isfinite(loss).all() and loss[-1] < 0.7 * loss[0]


@pytest.mark.slow
@pytest.mark.backend
def test_a_two_input_model_fits_on_bucketed_pydataset_on_this_backend():
    src, dec_in, dec_out = _pairs(32, seed=5, vocab=12)
    sampler = sp.BucketSampler(sp.sequence_lengths(src), batch_size=8, seed=0)
    pyds = bucketed_pydataset({"encoder": src, "decoder": dec_in}, dec_out, sampler=sampler,
                              sample_weight="timestep")
    keras.utils.set_random_seed(0)
    model = _seq2seq(vocab=12)
    before = [w.copy() for w in model.get_weights()]
    history = model.fit(pyds, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert any(not np.allclose(a, b) for a, b in zip(before, model.get_weights(), strict=True))


# --------------------------------------------------------------------------- packed_dataset


def _pack(x, y=None, **kw):
    sampler = sp.PackSampler(sp.sequence_lengths(x), batch_size=2, shuffle=False)
    return sp.packed_dataset(x, y, sampler=sampler, **kw)


def test_packed_dataset_refuses_nonfinite_features_unless_allowed():
    x = [np.array([[0.0], [1.0]]), np.array([[2.0], [np.inf], [3.0]])]
    with pytest.raises(ValueError, match=r"`x`.*x\[1\] at step 1.*\n- .*allow_nonfinite=True"):
        _pack(x)
    inputs = next(iter(_pack(x, options=Options(allow_nonfinite=True))))
    assert np.isinf(inputs["values"].numpy()).sum() == 1


def test_packed_dataset_refuses_nan_per_step_targets_and_weights_with_position_and_fix():
    x = [[1, 2], [3, 4, 5]]
    with pytest.raises(ValueError, match=r"`y`.*y\[1\].*\n- .*sample weight 0"):
        _pack(x, [[0.0, 1.0], [1.0, np.nan, 0.0]])
    with pytest.raises(ValueError, match=r"sample_weight\[0\]=.*nan.*\n- Give that sequence"):
        _pack(x, [0, 1], sample_weight=[np.nan, 1.0])


def test_packed_dataset_refuses_several_fields():
    with pytest.raises(ValueError, match=r"`x` is a dict or tuple of fields.*\n- Pack one"):
        sp.packed_dataset({"a": [[1]], "b": [[2]]}, sampler=sp.PackSampler([1], batch_size=1))


# --------------------------------------------------------------------------- bad input


def _sampler(x):
    return sp.BucketSampler(sp.sequence_lengths(x), batch_size=2, shuffle=False)


BAD = {
    "fields of different counts": (
        lambda: bucketed_pydataset({"a": [[1], [2]], "b": [[3]]}, sampler=_sampler([[1], [2]])),
        r"fields of `x` must hold one sequence per example.*2 in `x\['a'\]` and 1 in "
        r"`x\['b'\]`\n- Pass the same examples"),
    "target field of another count": (
        lambda: bucketed_pydataset({"a": [[1], [2]], "b": [[3], [4, 5]]}, [[1], [2], [3]],
                                   sampler=_sampler([[1], [2]])),
        r"`x\['a'\]` and `y` must have the same number of sequences.*\n- "),
    "per-step targets that match no field": (
        lambda: bucketed_pydataset({"a": [[1], [2]], "b": [[3], [4, 5]]},
                                   [[1, 2, 3], [1]], sampler=_sampler([[1], [2]]),
                                   targets="step"),
        r"`y` holds per-step targets whose lengths match no field of `x`: y\[0\] has 3 steps; "
        r"at that position `x\['a'\]` 1, `x\['b'\]` 1\.\n- Per-step targets need"),
    "a sampler built on no field's lengths": (
        lambda: bucketed_pydataset({"a": [[1], [2]], "b": [[3], [4, 5]]},
                                   sampler=_sampler([[1, 2, 3], [1]])),
        r"`sampler` was built on lengths that match no field of `x` \(`x\['a'\]`: sequence 0 "
        r"has 1 steps, the sampler 3; .*\n- Build the sampler"),
    "a sampler of another count": (
        lambda: bucketed_pydataset({"a": [[1], [2]]}, sampler=_sampler([[1]])),
        r"`sampler` was built on 1 lengths, but the fields of `x` hold 2 .*\n- Build"),
    "a per-field option for one collection": (
        lambda: bucketed_pydataset([[1]], sampler=_sampler([[1]]), padding={"a": "pre"}),
        r"`padding` is a dict, but `x` is one sequence collection.*\n- Pass one padding"),
    "a per-field option for an unknown field": (
        lambda: bucketed_pydataset({"a": [[1]]}, sampler=_sampler([[1]]), value={"b": 1}),
        r"`value` names field 'b', which `x` does not have.*\n- Key `value`"),
    "a bad per-field choice": (
        lambda: bucketed_pydataset({"a": [[1]]}, sampler=_sampler([[1]]),
                                   padding={"a": "mid"}),
        r"Argument `padding` must be 'pre' or 'post'. Received: padding='mid'"),
    "a pad value the field's dtype cannot hold": (
        lambda: bucketed_pydataset({"a": [np.array([1], np.uint8)]}, sampler=_sampler([[1]]),
                                   value={"a": -1}),
        r"`value`=-1 cannot be represented in `dtype`='uint8'.*\n- Pick a padding value"),
    "targets_field naming no field": (
        lambda: bucketed_pydataset({"a": [[1]]}, [[1]], sampler=_sampler([[1]]),
                                   options=Options(targets_field="z")),
        r"`targets_field` must name a field of `x`.*'z'.*\n- Pass the name"),
    "targets_field without y": (
        lambda: bucketed_pydataset({"a": [[1]]}, sampler=_sampler([[1]]),
                                   options=Options(targets_field="a")),
        r"`targets_field` needs `y`.*\n- Pass `y`"),
    "targets_field with one collection": (
        lambda: bucketed_pydataset([[1]], [[1]], sampler=_sampler([[1]]),
                                   options=Options(targets_field="a")),
        r"`targets_field` names a field, but `x` is one sequence collection.*\n- Drop"),
    "pad_to bucket on a field the sampler does not plan": (
        lambda: bucketed_pydataset({"a": [[1], [2]], "b": [[3], [4, 5]]},
                                   sampler=_sampler([[1], [2]]), pad_to={"b": "bucket"}),
        r"`pad_to`=\"bucket\" for `x\['b'\]`, which the sampler does not bucket.*\n- Pass"),
    "an int pad_to shorter than a field's sequence": (
        lambda: bucketed_pydataset({"a": [[1], [2]], "b": [[3], [4, 5]]},
                                   sampler=_sampler([[1], [2]]), pad_to={"b": 1}),
        r"`pad_to`=1 is shorter than sequence 1 of `x\['b'\]` \(length 2\).*\n- Pass"),
    "NaN in one field": (
        lambda: bucketed_pydataset({"a": [[1.0]], "b": [[np.nan]]}, sampler=_sampler([[1]])),
        r"`x\['b'\]` holds 1 NaN.*x\['b'\]\[0\] at step 0.*\n- If the model handles"),
    "an empty dict": (
        lambda: bucketed_pydataset({}, sampler=_sampler([[1]])),
        r"`x` is an empty dict.*\n- Pass a dict of sequence collections"),
    "a non-string key": (
        lambda: bucketed_pydataset({1: [[1]]}, sampler=_sampler([[1]])),
        r"string keys.*Received key 1 of type int\n- Name every field"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_names_the_argument_what_was_received_and_the_fix(case):
    call, match = BAD[case]
    with pytest.raises((ValueError, TypeError), match=match):
        call()


def test_the_stage_never_mutates_or_aliases_the_callers_arrays():
    src = [np.array([1.0, 2.0]), np.array([3.0])]
    copy = [a.copy() for a in src]
    st_ = _inputs.prepare({"a": src, "b": src}, None)
    for a, b in zip(src, copy, strict=True):
        np.testing.assert_array_equal(a, b)
    values = st_.fields[0].table.x
    assert values.dtype == np.float32  # float64 -> float32, the one dtype rule
    assert not np.shares_memory(values, src[0])


def test_the_fields_section_of_the_encoder_decoder_docs_runs(capsys):
    """The code blocks of docs/encoder_decoder.md's "Several fields per example" run as written."""
    import re
    from pathlib import Path

    text = (Path(__file__).parents[1] / "docs" / "encoder_decoder.md").read_text()
    section = text.split("## Several fields per example")[1].split("\n## ")[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.DOTALL)
    assert len(blocks) == 6
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "docs/encoder_decoder.md", "exec"), namespace)
    printed = capsys.readouterr().out
    assert "targets and weights follow the decoder field" in printed
    assert "(None, 16)\nTrue\n" in printed  # the mask check of the fields section
    assert "(200, 14) (200, 10) (200, 10)" in printed  # pad_fields pads each field apart


def test_the_input_stage_runs_without_tensorflow_or_keras():
    """_inputs.py is numpy only: it prepares and gathers fields with both imports blocked."""
    import subprocess
    import sys
    import textwrap
    from pathlib import Path

    code = textwrap.dedent("""
        import sys

        class Blocker:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("tensorflow", "keras"):
                    raise ImportError(name + " is blocked")

        sys.meta_path.insert(0, Blocker())
        import numpy as np
        import seqprep as sp
        from seqprep.inputs import _stage as _inputs
        x = {"a": [[1, 2], [3]], "b": [[4], [5, 6, 7]]}
        s = sp.BucketSampler(sp.sequence_lengths(x["a"]), batch_size=2, shuffle=False)
        st = _inputs.prepare(x, [[1, 1], [0]], "timestep", sampler=s,
                             sampler_type=sp.BucketSampler)
        plan = s.plan(0)
        xb, yb, wb = _inputs.gather(st, plan[0], _inputs.batch_widths(plan, st)[0])
        lens = [len(x["a"][i]) for i in plan[0]]
        assert xb["b"].shape == (2, 3)
        assert wb.tolist() == [[1.0] * k + [0.0] * (2 - k) for k in lens]
        assert "tensorflow" not in sys.modules and "keras" not in sys.modules
        print("ok")
    """)
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=root, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_a_tuple_y_is_several_targets_only_when_its_items_are_whole_target_collections():
    x = [[1, 2, 3], [4]]
    # A tuple of per-step arrays (one per sequence) stays one per-step target collection...
    st_ = _inputs.prepare(x, (np.array([1, 2, 3]), np.array([4])))
    assert st_.y_kind == "single" and st_.targets[0].table.y_mode == "step"
    # ...while a tuple of label arrays with one row per example is one target per output.
    st_ = _inputs.prepare(x, (np.array([1, 2]), np.array([[4, 5], [6, 7]])))
    assert st_.y_kind == "tuple"
    assert [t.table.y_mode for t in st_.targets] == ["sequence", "sequence"]
