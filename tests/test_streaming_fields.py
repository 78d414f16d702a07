"""Tests for seqprep.running._streaming: bucket_by_length on elements with several ragged fields
(encoder-decoder pairs): each field padded to its own width, on its own side, with its own
value, checked against ``tf.data.Dataset.padded_batch`` and ``pad_sequences`` on the same
batches; per-field options and the bucketing length; bad input."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from seqprep import bucket_by_length, pad_sequences

_SPEC = (
    {"encoder": tf.TensorSpec([None], tf.int32), "decoder": tf.TensorSpec([None], tf.float32)},
    tf.TensorSpec([None], tf.int64),
    tf.TensorSpec([], tf.int64),
)


def _fields(src_lengths, dst_lengths):
    """Per example i: a source of ``src_lengths[i]`` steps, a decoder input and its per-step
    target of ``dst_lengths[i]`` steps, every value non-zero and naming its example."""
    src = [(100 * i + np.arange(1, k + 1)).astype(np.int32) for i, k in enumerate(src_lengths)]
    dec = [-(100 * i + np.arange(1, k + 1)).astype(np.float32) / 8
           for i, k in enumerate(dst_lengths)]
    tgt = [(100 * i + np.arange(1, k + 1) + 50).astype(np.int64)
           for i, k in enumerate(dst_lengths)]
    return src, dec, tgt


def _dataset(src, dec, tgt, order=None, source="ragged"):
    """``({"encoder": (S,), "decoder": (T,)}, (T,), id)`` elements, in ``order`` (default: all)."""
    order = np.arange(len(src)) if order is None else np.asarray(order, np.int64)
    if source == "generator":  # dense elements, pooled with sparse_batch
        def gen():
            for i in order:
                yield {"encoder": src[i], "decoder": dec[i]}, tgt[i], i

        return tf.data.Dataset.from_generator(gen, output_signature=_SPEC)

    def ragged(seqs, dtype):  # slices of a ragged tensor, pooled with batch
        rows = [seqs[i] for i in order]
        flat = np.concatenate([np.zeros(0, dtype), *rows]).astype(dtype)
        return tf.RaggedTensor.from_row_lengths(flat, np.array([r.size for r in rows], np.int64))

    return tf.data.Dataset.from_tensor_slices((
        {"encoder": ragged(src, np.int32), "decoder": ragged(dec, np.float32)},
        ragged(tgt, np.int64), order))


def _batches(ds):
    return [tf.nest.map_structure(lambda t: t.numpy(), b) for b in ds]


def _padded_batch_reference(src, dec, tgt, batches, values):
    """tf.data's ``padded_batch`` of the same elements in the same batches (each component
    post-padded with its value to its own longest): the emitted order, cut by batch sizes."""
    order = np.concatenate([ids for *_, ids in batches]).astype(np.int64)
    sizes = tf.constant([ids.size for *_, ids in batches], tf.int64)
    which = np.repeat(np.arange(len(batches)), [ids.size for *_, ids in batches])
    elements = tf.data.Dataset.zip(_dataset(src, dec, tgt, order, "generator"),
                                   tf.data.Dataset.from_tensor_slices(which.astype(np.int64)))
    padding_values = ({"encoder": tf.constant(values["encoder"], tf.int32),
                       "decoder": tf.constant(values["decoder"], tf.float32)},
                      tf.constant(values["target"], tf.int64), tf.constant(0, tf.int64))
    ref = elements.group_by_window(
        key_func=lambda e, b: b,
        reduce_func=lambda k, w: w.map(lambda e, b: e).padded_batch(
            tf.gather(sizes, k), padding_values=padding_values),
        window_size_func=lambda k: tf.gather(sizes, k),
    )
    return _batches(ref)


@settings(max_examples=8, deadline=None)
@given(data=st.data())
def test_every_field_padded_like_padded_batch_and_pad_sequences_on_the_same_batches(data):
    n = data.draw(st.integers(0, 40), label="n")
    src_lengths = data.draw(st.lists(st.integers(0, 12), min_size=n, max_size=n), label="S")
    dst_lengths = data.draw(st.lists(st.integers(0, 9), min_size=n, max_size=n), label="T")
    src, dec, tgt = _fields(src_lengths, dst_lengths)
    sides = {f: data.draw(st.sampled_from(["pre", "post"]), label=f"{f} side")
             for f in ("encoder", "decoder", "target")}
    values = {"encoder": data.draw(st.integers(-5, 5), label="encoder value"),
              "decoder": data.draw(st.sampled_from([0.0, -1.5, 7.25]), label="decoder value"),
              "target": data.draw(st.integers(-5, 5), label="target value")}
    # A dict may leave a field out: it keeps "post" and 0.
    x_sides = {f: sides[f] for f in ("encoder", "decoder") if sides[f] == "pre"}
    x_values = {f: values[f] for f in ("encoder", "decoder") if values[f] != 0}
    by = data.draw(st.sampled_from(["encoder", "longest"]), label="bucketing length")
    length_fn = (
        (lambda e: tf.shape(e[0]["encoder"])[0]) if by == "encoder"  # read off the pools
        else lambda e: tf.maximum(tf.shape(e[0]["encoder"])[0],  # one map per element
                                  tf.shape(e[0]["decoder"])[0]))
    budget = data.draw(st.one_of(st.none(), st.integers(12, 60)), label="max_tokens")
    sizing = ({"batch_size": data.draw(st.integers(1, 6), label="batch_size")} if budget is None
              else {"max_tokens": budget, "max_length": 12})
    buffer_size = data.draw(st.sampled_from([None, 7]), label="buffer_size")
    bounds = sorted(data.draw(st.sets(st.integers(1, 12), max_size=3), label="bounds"))
    source = data.draw(st.sampled_from(["ragged", "generator"]), label="source")

    out = _dataset(src, dec, tgt, source=source).apply(bucket_by_length(
        bounds, **sizing, length_fn=length_fn, buffer_size=buffer_size, seed=4,
        padding=(x_sides, sides["target"], "post"), value=(x_values, values["target"], 0)))
    batches = _batches(out)

    seen = np.concatenate([ids for *_, ids in batches]) if batches else np.zeros(0)
    assert sorted(seen.tolist()) == list(range(n))  # every element once
    key = np.array(src_lengths if by == "encoder" else np.maximum(src_lengths, dst_lengths))
    reference = _padded_batch_reference(src, dec, tgt, batches, values) if batches else []
    assert len(reference) == len(batches)
    for (x, y, ids), (rx, ry, rids) in zip(batches, reference, strict=True):
        np.testing.assert_array_equal(ids, rids)
        assert len(set(np.searchsorted(bounds, key[ids], side="right").tolist())) == 1
        got = {"encoder": x["encoder"], "decoder": x["decoder"], "target": y}
        post = {"encoder": rx["encoder"], "decoder": rx["decoder"], "target": ry}
        seqs = {"encoder": [src[i] for i in ids], "decoder": [dec[i] for i in ids],
                "target": [tgt[i] for i in ids]}
        for field, batch in got.items():
            # Each field has its own width: its own longest in the batch.
            lengths = [s.size for s in seqs[field]]
            assert batch.shape == (ids.size, max(lengths))
            assert batch.dtype == post[field].dtype
            if sides[field] == "post":
                np.testing.assert_array_equal(batch, post[field])
            expected = pad_sequences(seqs[field], dtype=batch.dtype, padding=sides[field],
                                     value=values[field])
            np.testing.assert_array_equal(batch.reshape(expected.shape), expected)
        if budget is not None:
            assert ids.size * key[ids].max(initial=0) <= budget
            if by == "longest":  # bucketing by the longest field bounds every field
                assert all(ids.size * b.shape[1] <= budget for b in got.values())


def test_tuple_of_fields_and_the_default_length_is_the_first_component():
    # (encoder, decoder, target): bucketed by the encoder (the first component), each field
    # padded to its own width with its own value and side.
    src, dec, tgt = _fields([5, 1, 6, 2], [1, 4, 2, 3])
    ds = _dataset(src, dec, tgt).map(lambda x, y, i: (x["encoder"], x["decoder"], y))
    out = _batches(ds.apply(bucket_by_length(
        [3], batch_size=2, buffer_size=None, padding=("pre", "post", "post"),
        value=(-1, 0.5, -2))))
    assert [b[0].tolist() for b in out] == [[[-1, 1, 2, 3, 4, 5], [201, 202, 203, 204, 205, 206]],
                                            [[-1, 101], [301, 302]]]
    np.testing.assert_array_equal(out[0][1], [[-0.125, 0.5], [-25.125, -25.25]])
    assert out[0][2].tolist() == [[51, -2], [251, 252]]
    assert out[1][2].tolist() == [[151, 152, 153, 154], [351, 352, 353, -2]]


def test_a_length_fn_reading_a_nested_field_is_recognised():
    from seqprep.running._streaming_options import _traced_leading_dim

    # tf.nest order: the dict's sorted keys, then the other components.
    assert _traced_leading_dim(lambda e: tf.shape(e[0]["encoder"])[0], _SPEC, False) == 1
    assert _traced_leading_dim(lambda e: tf.shape(e[1])[0], _SPEC, False) == 2
    longest = lambda e: tf.maximum(tf.shape(e[0]["encoder"])[0],  # noqa: E731
                                   tf.shape(e[0]["decoder"])[0])
    assert _traced_leading_dim(longest, _SPEC, False) is None


def test_a_nested_tuple_is_bucketed_by_its_first_leaf():
    src, dec, tgt = _fields([4, 1, 5], [1, 3, 1])
    ds = _dataset(src, dec, tgt).map(lambda x, y, i: ((x["encoder"], x["decoder"]), y))
    out = _batches(ds.apply(bucket_by_length([3], batch_size=2, buffer_size=None)))
    assert [b[0][0].shape for b in out] == [(2, 5), (1, 1)]  # {4, 5}, then {1}
    assert [b[0][1].shape for b in out] == [(2, 1), (1, 3)]


def test_per_field_options_refused_with_the_fix():
    src, dec, tgt = _fields([2, 3], [1, 2])
    ds = _dataset(src, dec, tgt)
    by_src = {"batch_size": 2, "length_fn": lambda e: tf.shape(e[0]["encoder"])[0]}
    with pytest.raises(ValueError, match=r"names field 'encodr', which element\[0\] does not "
                                         r"have.*its fields are \['encoder', 'decoder'\]"):
        ds.apply(bucket_by_length([3], padding=({"encodr": "pre"}, "post", "post"), **by_src))
    with pytest.raises(ValueError, match=r"names field 'tokens'"):
        ds.apply(bucket_by_length([3], value=({"tokens": -1}, 0, 0), **by_src))
    with pytest.raises(ValueError, match=r"`padding` gives a dict for element, which is a "
                                         r"tuple|a tuple of 3 components"):
        ds.apply(bucket_by_length([3], padding={"encoder": "pre"}, **by_src))
    with pytest.raises(ValueError, match=r"`value` must give one value for element, a tuple "
                                         r"of 3 components.*Received: value=\(0, 0\)"):
        ds.apply(bucket_by_length([3], value=(0, 0), **by_src))
    with pytest.raises(ValueError, match=r"gives a structure .* for element\[1\], which is one "
                                         r"tensor"):
        ds.apply(bucket_by_length([3], padding=("post", ("pre",), "post"), **by_src))
    with pytest.raises(ValueError, match=r"gives a tuple for element\[0\], which is a dict"):
        ds.apply(bucket_by_length([3], value=((1, 2), 0, 0), **by_src))
    with pytest.raises(ValueError, match=r"'pre' or 'post'.*Received 'mid'"):
        bucket_by_length([3], padding=({"encoder": "mid"}, "post", "post"), batch_size=2)
    with pytest.raises(TypeError, match="is a string but component"):
        ds.apply(bucket_by_length([3], value=({"encoder": "x"}, 0, 0), **by_src))
    with pytest.raises(ValueError, match=r"(?s)e\[0\], is a dict.*length_fn=lambda e: "
                                         r"tf.shape\(e\[0\]\['encoder'\]\)\[0\]"):
        ds.apply(bucket_by_length([3], batch_size=2))


def _keras_pairs():
    """Token pairs for a Keras model: ``({"encoder", "decoder"}, targets, timestep weights)``,
    the weights a component of ones as long as the targets (padded with 0)."""
    rng = np.random.default_rng(3)
    src, dec, tgt = _fields(rng.integers(1, 12, 48), rng.integers(1, 8, 48))
    ds = _dataset(src, dec, tgt).map(lambda x, y, i: (
        {"encoder": x["encoder"] % 20 + 1, "decoder": tf.cast(y % 20 + 1, tf.int32)},
        y % 20, tf.ones_like(y, tf.float32)))
    batches = ds.apply(bucket_by_length(
        [4, 8], batch_size=8, seed=0, length_fn=lambda e: tf.shape(e[0]["encoder"])[0],
        padding=({"encoder": "pre"}, "post", "post")))
    return batches, tgt


def test_streamed_pairs_keep_per_field_widths_and_timestep_weights():
    batches, tgt = _keras_pairs()
    widths = [(x["encoder"].shape[1], x["decoder"].shape[1], y.shape[1], w.numpy().sum())
              for x, y, w in batches]
    assert any(e != d for e, d, *_ in widths)  # the fields have their own widths
    assert all(d == t for _, d, t, _ in widths)  # targets and weights follow the decoder
    assert sum(s for *_, s in widths) == sum(t.size for t in tgt)  # weight 1 per real step


@pytest.mark.slow
def test_keras_trains_on_streamed_pairs():
    import keras

    batches, _ = _keras_pairs()
    steps = int(batches.reduce(0, lambda n, _: n + 1))  # the documented count, once
    batches = batches.apply(tf.data.experimental.assert_cardinality(steps))
    enc_in = keras.Input((None,), dtype="int32", name="encoder")
    dec_in = keras.Input((None,), dtype="int32", name="decoder")
    context = keras.layers.GlobalAveragePooling1D()(
        keras.layers.Embedding(21, 4, mask_zero=True)(enc_in))
    outputs = keras.layers.Embedding(21, 4, mask_zero=True)(dec_in)
    outputs = keras.layers.Add()([outputs, keras.layers.RepeatVector(1)(context)])
    model = keras.Model([enc_in, dec_in], keras.layers.Dense(20)(outputs))
    model.compile(optimizer="adam",
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(batches, epochs=1, shuffle=False, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
