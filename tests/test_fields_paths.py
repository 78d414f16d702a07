"""Several ragged fields per example on the replica / distributed paths, in
``fit_separate_models`` and ``LengthEnsemble``, and the bad-input refusals of every path that
takes fields (issue 20).

Checked: with 2-D lengths, the replicas' plans hold every example exactly once per epoch, run
equal step counts and share every field's width at each step; a replica planner resumed after
any step plays the rest of the uninterrupted epoch; through ``replica_dataset_fn`` (per input
pipeline, several local replicas), each field of every batch equals ``pad_sequences`` of that
field's planned sequences at the step's width, per-step targets and their weights follow their
field, and a pipeline resumed at a step plays the rest; under ``MirroredStrategy`` (2 logical
CPUs, in a subprocess) a dict-input model trains on such batches. ``fit_separate_models``
groups by the first field and pads the others per group; bad input (fields of different
counts, a target of another count, lengths that match no field, a 2-D sampler for one
collection and the reverse) gives a clear error on every executor.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, reject, settings
from hypothesis import strategies as st

import seqprep as sp
from seqprep.planning._replicas import ReplicaPlanner, replica_plans
from seqprep.running._distributed import replica_dataset_fn, service_bucketed_dataset

WORKER = Path(__file__).with_name("_fields_mirrored_worker.py")


# --------------------------------------------------------------------------- data


def pair_data(n: int, seed: int = 0, *, max_src: int = 15, max_tgt: int = 10):
    """``(src, dec_in, dec_out)``: token sequences of their own lengths; ``src[i][0]`` is
    ``i + 1`` (a batch names its examples), targets are the decoder inputs shifted."""
    rng = np.random.default_rng(seed)
    src = [np.concatenate([[i + 1], rng.integers(1, 50, k - 1)]).astype(np.int32)
           for i, k in enumerate(rng.integers(1, max_src, n))]
    tgt = [rng.integers(3, 50, k).astype(np.int32) for k in rng.integers(1, max_tgt, n)]
    dec_in = [np.concatenate([[1], t]).astype(np.int32) for t in tgt]
    dec_out = [np.concatenate([t, [2]]).astype(np.int32) for t in tgt]
    return src, dec_in, dec_out


def two_d_sampler(src, dec, **kwargs):
    lengths = {"enc": sp.sequence_lengths(src), "dec": sp.sequence_lengths(dec)}
    return sp.BucketSampler(lengths, **kwargs)


# --------------------------------------------------------------------------- plans (numpy)


@st.composite
def replica_setups(draw):
    n = draw(st.integers(1, 80), label="n")
    rng = np.random.default_rng(draw(st.integers(0, 2**16), label="lengths seed"))
    src = rng.integers(1, 30, n)
    lengths = np.stack([src, np.maximum(1, src + rng.integers(-5, 6, n))], axis=1)
    replicas = draw(st.integers(1, 4), label="replicas")
    # a row's lengths sum to at most 29 + 34 = 63, so every budget holds every example
    budget = (dict(batch_size=draw(st.integers(1, 6), label="rows")) if draw(st.booleans())
              else dict(max_tokens=draw(st.integers(64, 300), label="tokens")))
    kwargs = dict(seed=draw(st.integers(0, 99), label="seed"),
                  drop_remainder=draw(st.booleans(), label="drop_remainder"), **budget)
    try:
        shards = [sp.BucketSampler(lengths, num_shards=replicas, shard_index=k, **kwargs)
                  for k in range(replicas)]
    except ValueError as e:  # too few examples for equal shards (or all dropped): refused
        assert "same number of batches" in str(e) or "would leave out all" in str(e)
        reject()
    return lengths, shards, draw(st.sampled_from(["step", "bucket"]), label="pad_to")


@pytest.mark.filterwarnings("ignore:.*left out of every epoch")
@settings(max_examples=40, deadline=None)
@given(setup=replica_setups(), epoch=st.integers(0, 3), data=st.data())
def test_replica_plans_of_two_fields_align_every_field_and_resume(setup, epoch, data):
    lengths, shards, pad_to = setup
    plans = replica_plans(shards, epoch, pad_to=pad_to)
    steps = {len(p) for p in plans}
    assert len(steps) == 1, "every replica runs the same number of steps"
    seen = Counter(int(i) for p in plans for b in p.batches for i in b)
    dropped = shards[0].num_dropped_
    assert set(seen.values()) <= {1} and len(seen) == len(lengths) - dropped
    widths = plans[0].field_pad_lengths
    assert widths.shape == (len(plans[0]), 2)
    for p in plans[1:]:
        np.testing.assert_array_equal(p.field_pad_lengths, widths)
        np.testing.assert_array_equal(p.buckets, plans[0].buckets)
    if len(plans[0]):
        longest = np.array([[lengths[b].max(axis=0) if b.size else [0, 0] for b in p.batches]
                            for p in plans])  # (replicas, steps, fields)
        assert (longest <= widths).all(), "every field fits its step's width"
        if pad_to == "step":
            np.testing.assert_array_equal(longest.max(axis=0), widths)
        np.testing.assert_array_equal(plans[0].pad_lengths, widths.max(axis=1))
    # Resume after any step of any replica: the rest of the uninterrupted epoch.
    replica = data.draw(st.integers(0, len(shards) - 1), label="replica")
    planner = ReplicaPlanner(shards, replica, pad_to=pad_to)
    planner.set_epoch(epoch)
    full = [b.tolist() for b in planner]
    planner.set_epoch(epoch)
    done = data.draw(st.integers(0, len(full)), label="done")
    it = iter(planner)
    for _ in range(done):
        next(it)
    resumed = ReplicaPlanner(shards, replica, pad_to=pad_to)
    resumed.load_state_dict(planner.state_dict())
    assert [b.tolist() for b in resumed] == full[done:]
    assert full == [b.tolist() for b in plans[replica].batches]


# --------------------------------------------------------------------------- dataset_fn


def _pipeline(fn, pipeline: int, num_pipelines: int, num_replicas: int) -> tf.data.Dataset:
    return fn(tf.distribute.InputContext(num_input_pipelines=num_pipelines,
                                         input_pipeline_id=pipeline,
                                         num_replicas_in_sync=num_replicas))


def _replica_batches(fn, num_pipelines: int, num_replicas: int) -> list[list[tuple]]:
    """Every replica's batches (numpy), in step order: pipeline ``p``'s element
    ``step * local + j`` is its local replica ``j``'s."""
    local = num_replicas // num_pipelines
    out = []
    for p in range(num_pipelines):
        elements = [tf.nest.map_structure(lambda t: t.numpy(), e)
                    for e in _pipeline(fn, p, num_pipelines, num_replicas)]
        out.extend(elements[j::local] for j in range(local))
    return out


def _check_batch(xb, yb, wb, fields, dec_out, padding):
    """Each field of a batch is ``pad_sequences`` of its planned sequences at the batch's
    width; the per-step targets and weights follow the decoder field."""
    ids = (xb["enc"][:, 0] if padding["enc"] == "post" else
           xb["enc"][np.arange(len(xb["enc"])), -sp.sequence_lengths(
               [r[r != 0] for r in xb["enc"]])]) - 1
    for name, seqs in fields.items():
        expected = sp.pad_sequences([seqs[i] for i in ids], maxlen=xb[name].shape[1],
                                    padding=padding[name])
        np.testing.assert_array_equal(xb[name], expected)
    np.testing.assert_array_equal(
        yb, sp.pad_sequences([dec_out[i] for i in ids], maxlen=xb["dec"].shape[1],
                             padding=padding["dec"]))
    np.testing.assert_array_equal(wb, (xb["dec"] != 0).astype(np.float32))
    return ids


@pytest.mark.parametrize(("num_pipelines", "num_replicas"), [(1, 2), (2, 4), (2, 2)])
@pytest.mark.parametrize("pad_to", ["step", "bucket"])
def test_replica_dataset_fn_pads_every_field_of_every_replica(num_pipelines, num_replicas,
                                                              pad_to):
    n = 53
    src, dec_in, dec_out = pair_data(n, seed=num_replicas)
    fields = {"enc": src, "dec": dec_in}
    padding = {"enc": "pre", "dec": "post"}
    sampler = two_d_sampler(src, dec_in, batch_size=8, seed=3)
    fn = replica_dataset_fn(fields, dec_out, sampler=sampler, padding={"enc": "pre"},
                            sample_weight="timestep", pad_to=pad_to)
    replicas = _replica_batches(fn, num_pipelines, num_replicas)
    assert len({len(r) for r in replicas}) == 1, "equal step counts"
    seen = Counter()
    for step in range(len(replicas[0])):
        batches = [r[step] for r in replicas]
        for name in fields:
            assert len({xb[name].shape[1] for xb, _, _ in batches}) == 1, (
                f"step {step}: replicas pad {name} to different widths")
        step_ids = [_check_batch(xb, yb, wb, fields, dec_out, padding) for xb, yb, wb in batches]
        seen.update(int(i) for ids in step_ids for i in ids)
        if pad_to == "step":  # the longest of any replica's batch at the step, field by field
            for name, seqs in fields.items():
                longest = max(len(seqs[i]) for ids in step_ids for i in ids)
                assert batches[0][0][name].shape[1] == longest
    assert seen == Counter(range(n)), "every example exactly once across the replicas"


@settings(max_examples=8, deadline=None)
@given(n=st.integers(4, 40), seed=st.integers(0, 99), layout=st.sampled_from([(1, 2), (2, 2),
                                                                            (2, 4)]),
       pad_to=st.sampled_from(["step", "bucket"]), enc_side=st.sampled_from(["pre", "post"]),
       epoch=st.integers(0, 2), rows=st.integers(1, 3))
def test_replica_dataset_fn_fields_on_random_data(n, seed, layout, pad_to, enc_side, epoch,
                                                  rows):
    """Hypothesis: random pairs, replicas and epochs; every field of every replica's batch is
    ``pad_sequences`` of its planned sequences, the targets and weights follow the decoder."""
    src, dec_in, dec_out = pair_data(n, seed=seed)
    fields = {"enc": src, "dec": dec_in}
    sampler = two_d_sampler(src, dec_in, batch_size=layout[1] * rows, seed=seed)
    try:
        fn = replica_dataset_fn(fields, dec_out, sampler=sampler, padding={"enc": enc_side},
                                sample_weight="timestep", pad_to=pad_to, epoch=epoch)
        replicas = _replica_batches(fn, *layout)
    except ValueError as e:  # too few examples for equal shards: refused (tested elsewhere)
        assert "same number of batches" in str(e)
        reject()
    assert len({len(r) for r in replicas}) == 1
    seen = Counter()
    for step in zip(*replicas, strict=True):
        for name in fields:
            assert len({xb[name].shape[1] for xb, _, _ in step}) == 1
        for xb, yb, wb in step:
            seen.update(_check_batch(xb, yb, wb, fields, dec_out,
                                     {"enc": enc_side, "dec": "post"}).tolist())
    assert seen == Counter(range(n))


def test_replica_dataset_fn_step_width_is_the_longest_of_any_replica():
    n = 61
    src, dec_in, dec_out = pair_data(n, seed=5)
    sampler = two_d_sampler(src, dec_in, batch_size=6, seed=1)
    fn = replica_dataset_fn({"enc": src, "dec": dec_in}, dec_out, sampler=sampler)
    replicas = _replica_batches(fn, 1, 2)
    # The replicas' shards: the global sampler's boundaries, half its batch size each.
    shards = [two_d_sampler(src, dec_in, batch_size=3, seed=1, boundaries=sampler.boundaries,
                            num_shards=2, shard_index=k) for k in range(2)]
    plans = replica_plans(shards, 0)
    lengths = np.stack([sp.sequence_lengths(src), sp.sequence_lengths(dec_in)], axis=1)
    for step, per_replica in enumerate(zip(*replicas, strict=True)):
        planned = [p.batches[step] for p in plans]
        widths = np.max([lengths[b].max(axis=0) for b in planned], axis=0)
        for (xb, _), b in zip(per_replica, planned, strict=True):
            assert (xb["enc"].shape[1], xb["dec"].shape[1]) == tuple(widths)
            assert sorted(xb["enc"][:, 0] - 1) == sorted(b.tolist())


@pytest.mark.parametrize("as_tuple", [False, True])
def test_replica_dataset_fn_one_d_sampler_aligns_its_field(as_tuple):
    """A 1-D sampler plans one field: it is step-aligned; the others pad to each replica's
    own batch's longest (documented)."""
    n = 47
    src, dec_in, dec_out = pair_data(n, seed=2)
    sampler = sp.BucketSampler(sp.sequence_lengths(dec_in), batch_size=8, seed=0)
    x = (src, dec_in) if as_tuple else {"enc": src, "dec": dec_in}
    fn = replica_dataset_fn(x, dec_out, sampler=sampler, sample_weight="timestep")
    replicas = _replica_batches(fn, 1, 2)
    seen = Counter()
    for per_replica in zip(*replicas, strict=True):
        named = [({"enc": xb[0], "dec": xb[1]} if as_tuple else xb, yb, wb)
                 for xb, yb, wb in per_replica]
        assert len({xb["dec"].shape[1] for xb, _, _ in named}) == 1
        for xb, yb, wb in named:
            ids = _check_batch(xb, yb, wb, {"enc": src, "dec": dec_in}, dec_out,
                               {"enc": "post", "dec": "post"})
            assert xb["enc"].shape[1] == max(len(src[i]) for i in ids)
            seen.update(ids.tolist())
    assert seen == Counter(range(n))


def test_replica_pipeline_resumes_at_a_step():
    """A pipeline's dataset resumed at training step ``s`` through its epoch stream (the unit
    Keras and BackupAndRestore count) plays every local replica's batches from step ``s`` on:
    it skips ``s`` x its local replicas elements, so no replica gets another's batch."""
    n = 45
    src, dec_in, dec_out = pair_data(n, seed=4)
    sampler = two_d_sampler(src, dec_in, batch_size=6, seed=2)
    fn = replica_dataset_fn({"enc": src, "dec": dec_in}, dec_out, sampler=sampler)
    ctx = dict(num_pipelines=1, num_replicas=2)
    full = [tf.nest.map_structure(lambda t: t.numpy(), e)
            for e in _pipeline(fn, 0, ctx["num_pipelines"], ctx["num_replicas"])]
    steps = len(full) // 2
    for step in (1, steps - 1):
        ds = _pipeline(fn, 0, ctx["num_pipelines"], ctx["num_replicas"])
        stream = sp.epoch_stream(ds)
        assert (stream.batches_per_step, stream.steps_per_pass) == (2, steps)
        assert stream.batches_per_pass == len(full) == int(ds.cardinality())
        stream.resume_at(0, step)
        stream.drive(0)
        # A resumed pass is shorter than the cardinality Keras is told (Keras ends it, as
        # BackupAndRestore does): read its remaining batches.
        rest = [tf.nest.map_structure(lambda t: t.numpy(), e)
                for e in ds.take(len(full) - 2 * step)]
        for got, want in zip(rest, full[2 * step:], strict=True):
            for name in ("enc", "dec"):
                np.testing.assert_array_equal(got[0][name], want[0][name])
            np.testing.assert_array_equal(got[1], want[1])


def test_distributed_bucketed_dataset_is_found_by_its_epoch_stream():
    """``BackupAndRestore(dataset=dd)`` finds the pass counter of the process's pipeline."""
    src, dec_in, dec_out = pair_data(12, seed=1)
    sampler = two_d_sampler(src, dec_in, batch_size=4, seed=0)
    strategy = tf.distribute.get_strategy()
    dd = sp.distributed_bucketed_dataset(strategy, {"enc": src, "dec": dec_in}, dec_out,
                                         sampler=sampler)
    stream = sp.epoch_stream(dd)
    assert (stream.batches_per_step, stream.steps_per_pass) == (1, len(sampler))
    assert any(s is stream for s in sp.live_epoch_streams())
    fixed = sp.distributed_bucketed_dataset(strategy, {"enc": src, "dec": dec_in}, dec_out,
                                            sampler=sampler,
                                            options=sp.Options(reshuffle_each_iteration=False))
    with pytest.raises(ValueError, match="distributed_bucketed_dataset"):
        sp.epoch_stream(fixed)


@pytest.mark.slow
def test_mirrored_strategy_trains_a_dict_input_model_on_aligned_fields():
    """MirroredStrategy over 2 logical CPUs (a subprocess): ``distributed_bucketed_dataset``
    with a 2-D sampler and ``model.fit``; every replica's batches, recorded inside the train
    step, are the planned ones."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "-1",
           "KERAS_BACKEND": "tensorflow"}
    env.pop("TF_CONFIG", None)
    proc = subprocess.run([sys.executable, str(WORKER)], env=env, capture_output=True,
                          text=True, timeout=300)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(lines[-1][len("RESULT "):])
    assert result["num_replicas"] == 2 and np.isfinite(result["loss"]).all()
    src, dec_in, dec_out = pair_data(37, seed=11)
    fields = {"enc": src, "dec": dec_in}
    a, b = result["replicas"]
    assert len(a) == len(b) > 0, "both replicas run the same number of steps"
    seen = Counter()
    for step_a, step_b in zip(a, b, strict=True):
        for name in fields:
            assert np.shape(step_a[name])[1] == np.shape(step_b[name])[1]
        for batch in (step_a, step_b):
            xb = {name: np.asarray(batch[name]) for name in fields}
            ids = _check_batch(xb, np.asarray(batch["y"]), np.asarray(batch["w"]), fields,
                               dec_out, {"enc": "post", "dec": "post"})
            seen.update(ids.tolist())
    assert seen == Counter(range(37)), "every example exactly once across the replicas"


# --------------------------------------------------------------------------- separate models


def _recording_class(fits: list):
    """A ``keras.Model`` whose ``fit`` records ``(group, x, y, sample_weight)`` in ``fits``."""
    import keras

    class Recording(keras.Model):
        def fit(self, x=None, y=None, sample_weight=None, **kwargs):  # type: ignore[override]
            fits.append((getattr(self, "group", None), x, y, sample_weight))
            return super().fit(x, y, sample_weight=sample_weight, **kwargs)

    return Recording


def _tiny_seq2seq(model_class, *, two_outputs: bool = False):
    """A tiny dict-input encoder–decoder: per-step logits (``"steps"``), and with
    ``two_outputs`` a per-sequence ``"label"`` from the encoder's state."""
    import keras

    enc_in = keras.Input((None,), dtype="int32", name="enc")
    dec_in = keras.Input((None,), dtype="int32", name="dec")
    state = keras.layers.GRU(3)(keras.layers.Embedding(60, 3, mask_zero=True)(enc_in))
    d = keras.layers.Embedding(60, 3, mask_zero=True)(dec_in)
    d = keras.layers.GRU(3, return_sequences=True)(d, initial_state=state)
    steps = keras.layers.Dense(60, name="steps")(d)
    outputs = ({"steps": steps, "label": keras.layers.Dense(1, name="label")(state)}
               if two_outputs else steps)
    return model_class({"enc": enc_in, "dec": dec_in}, outputs)


def _seq2seq_builder(fits: list):
    """``build_model(group)`` of :func:`_tiny_seq2seq` whose ``fit`` records the arrays
    ``fit_separate_models`` gives it."""
    import keras

    Recording = _recording_class(fits)

    def build(group):
        model = _tiny_seq2seq(Recording)
        model.group = group
        model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        return model

    build.model_class = Recording
    return build


@pytest.mark.slow
@pytest.mark.parametrize("group_by", ["length", [6]])
def test_fit_separate_models_groups_by_the_first_field(group_by, tmp_path):
    n = 30
    src, dec_in, dec_out = pair_data(n, seed=8, max_src=3 if group_by == "length" else 12)
    x = {"enc": src, "dec": dec_in}
    fits: list = []
    build = _seq2seq_builder(fits)
    ens = sp.fit_separate_models(build, x, dec_out, group_by=group_by, epochs=1, verbose=0)
    src_len = sp.sequence_lengths(src)
    seen = Counter()
    for group, xb, yb, wb in fits:
        ids = xb["enc"][:, 0] - 1
        seen.update(ids.tolist())
        if group_by == "length":  # the grouping field has no padding
            assert (src_len[ids] == group).all() and xb["enc"].shape[1] == group
        else:
            low, high = group
            assert (src_len[ids] >= low).all() and (high is None or (src_len[ids] < high).all())
        for name, seqs in x.items():  # every field padded to its group's longest
            picked = [seqs[i] for i in ids]
            np.testing.assert_array_equal(xb[name], sp.pad_sequences(picked, padding="post"))
        np.testing.assert_array_equal(yb, sp.pad_sequences([dec_out[i] for i in ids],
                                                           padding="post"))
        np.testing.assert_array_equal(wb, (xb["dec"] != 0).astype(np.float32))
    assert seen == Counter(range(n)), "every example in exactly one group"
    assert ens.fields == {"kind": "dict", "keys": ["enc", "dec"]}
    assert all(len(w) == 2 for w in ens.widths.values())

    # Predictions in input order, each from its group's model on its group's padding.
    pred = ens.predict(x)
    assert len(pred) == n
    for group, xb, _, _ in fits:
        key = group if group_by == "length" else int(np.searchsorted([6], group[0],
                                                                     side="right"))
        out = np.asarray(ens.models[key].predict_on_batch(xb))
        for row, i in zip(out, xb["enc"][:, 0] - 1, strict=True):
            np.testing.assert_allclose(pred[i], row, rtol=1e-5, atol=1e-6)
    # evaluate: each group's model on its padded group, masked like the fit, averaged.
    logs = ens.evaluate(x, dec_out)
    per_group = [ens.models[g if group_by == "length" else int(np.searchsorted(
        [6], g[0], side="right"))].evaluate(xb, yb, sample_weight=wb, verbose=0)
        for g, xb, yb, wb in fits]
    sizes = [len(xb["enc"]) for _, xb, _, _ in fits]
    np.testing.assert_allclose(logs["loss"], np.dot(per_group, sizes) / n, rtol=1e-5)
    # Another layout is refused; the ensemble is saved and loaded with its own.
    with pytest.raises(ValueError, match=r"(?s)`x` must be laid out.*\['enc', 'dec'\].*"
                                         r"Received: one sequence collection"):
        ens.predict(src)
    with pytest.raises(ValueError, match=r"(?s)fields of `x` must hold one sequence per "
                                         r"example.*Received 30 .* 29 "):
        ens.predict({"enc": src, "dec": dec_in[:-1]})
    if group_by == "length":  # (once: saving and loading models takes a while)
        ens.save(tmp_path)
        loaded = sp.LengthEnsemble.load(tmp_path,
                                        custom_objects={"Recording": build.model_class})
        assert loaded.fields == ens.fields and loaded.widths == ens.widths
        for a, b in zip(loaded.predict(x), pred, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-6)


@pytest.mark.backend
def test_fit_separate_models_tuple_fields_with_sequence_targets_and_weights(tmp_path):
    """A tuple ``x`` of feature sequences, one label and one sample weight per example: the
    weights reach every group's fit as given; the layout survives save and load."""
    import keras

    rng = np.random.default_rng(3)
    n = 12
    first = [rng.random((k, 1)).astype(np.float32) + 1 for k in rng.integers(1, 3, n)]
    second = [rng.random((k, 1)).astype(np.float32) + 1 for k in rng.integers(1, 6, n)]
    labels, weights = rng.random(n).astype(np.float32), rng.random(n).astype(np.float32)
    fits = []
    Recording = _recording_class(fits)

    def build(group):
        a, b = keras.Input((None, 1)), keras.Input((None, 1))
        pooled = [keras.layers.GlobalAveragePooling1D()(t) for t in (a, b)]
        model = Recording([a, b], keras.layers.Dense(1)(keras.layers.Concatenate()(pooled)))
        model.compile("sgd", "mse")
        return model

    ens = sp.fit_separate_models(build, (first, second), labels, sample_weight=weights,
                                 epochs=1, verbose=0)
    assert ens.fields == {"kind": "tuple", "count": 2} and sorted(ens.models) == [1, 2]
    seen = []
    for _, (xa, xb), yb, wb in fits:
        ids = [next(i for i in range(n) if len(first[i]) == xa.shape[1]
                    and np.array_equal(first[i], xa[r])) for r in range(len(xa))]
        seen.extend(ids)
        np.testing.assert_array_equal(xb, sp.pad_sequences([second[i] for i in ids],
                                                           padding="post", dtype="float32"))
        np.testing.assert_array_equal(yb, labels[ids])
        np.testing.assert_array_equal(wb, weights[ids])
    assert sorted(seen) == list(range(n))
    pred = ens.predict((first, second))
    ens.save(tmp_path)
    loaded = sp.LengthEnsemble.load(tmp_path, custom_objects={"Recording": Recording})
    assert loaded.fields == ens.fields and loaded.widths == ens.widths
    np.testing.assert_allclose(loaded.predict((first, second)), pred, rtol=1e-6)
    with pytest.raises(ValueError, match=r"laid out.*a tuple of 2 fields.*Received: a tuple "
                                         r"of 3 fields"):
        ens.predict((first, second, second))


@pytest.mark.slow
def test_fit_separate_models_two_outputs_get_weights_each():
    """``y`` a dict of a per-step and a per-sequence target: the per-step one weighs 0 on the
    decoder's padding, the per-sequence one 1 on every row (Keras takes weights for all
    outputs or none)."""
    import keras

    src, dec_in, dec_out = pair_data(16, seed=2, max_src=3)
    labels = np.arange(16, dtype=np.float32)
    fits = []
    Recording = _recording_class(fits)

    def build(group):
        model = _tiny_seq2seq(Recording, two_outputs=True)
        model.compile("sgd", loss={"steps": keras.losses.SparseCategoricalCrossentropy(
            from_logits=True), "label": "mse"})
        return model

    x, y = {"enc": src, "dec": dec_in}, {"steps": dec_out, "label": labels}
    ens = sp.fit_separate_models(build, x, y, epochs=1, verbose=0)
    assert sum(len(xb["enc"]) for _, xb, _, _ in fits) == 16
    for _, xb, yb, wb in fits:
        ids = xb["enc"][:, 0] - 1
        np.testing.assert_array_equal(yb["label"], labels[ids])
        np.testing.assert_array_equal(wb["steps"], (xb["dec"] != 0).astype(np.float32))
        np.testing.assert_array_equal(wb["label"], np.ones(len(ids), np.float32))
    logs = ens.evaluate(x, y)
    assert set(logs) == {"loss", "steps_loss", "label_loss"}


# --------------------------------------------------------------------------- bad input

_SRC, _DEC_IN, _DEC_OUT = pair_data(20, seed=1)
_L = sp.sequence_lengths
_X2 = {"enc": _SRC, "dec": _DEC_IN}


def _samplers() -> dict:
    return {
        "2d": sp.BucketSampler({"enc": _L(_SRC), "dec": _L(_DEC_IN)}, batch_size=4),
        "other lengths": sp.BucketSampler(_L(_SRC) + 1, batch_size=4),
        "3 fields": sp.BucketSampler(np.stack([_L(_SRC), _L(_DEC_IN), _L(_DEC_IN)], axis=1),
                                     batch_size=4),
    }


# (x, y, sampler) of each bad input, and what its message must say.
BAD = {
    "fields of different counts": (
        lambda: {"enc": _SRC, "dec": _DEC_IN[:-1]}, lambda: _DEC_OUT, "2d",
        r"fields of `x` must hold one sequence per example each\. Received 20 in `x\['enc'\]` "
        r"and 19 in `x\['dec'\]`\n- Pass the same examples"),
    "a target of another count": (
        lambda: _X2, lambda: _DEC_OUT[:-1], "2d",
        r"`x\['enc'\]` and `y` must have the same number of sequences.*Received "
        r"len\(x\['enc'\]\)=20, len\(y\)=19\n- Pass one target"),
    "targets whose lengths match no field": (
        lambda: _X2, lambda: [np.append(o, 3) for o in _DEC_OUT], "2d",
        r"`y` holds per-step targets whose lengths match no field of `x`: y\[0\] has \d+ "
        r"steps.*\n- Per-step targets need"),
    "a sampler on lengths of no field": (
        lambda: _X2, lambda: _DEC_OUT, "other lengths",
        r"`sampler` was built on lengths that match no field of `x`.*\n- Build the sampler"),
    "a 2-D sampler for one collection": (
        lambda: _SRC, lambda: np.zeros(20), "2d",
        r"`sampler` plans 2 fields \(lengths of shape \(20, 2\)\), but `x` is one sequence "
        r"collection\.\n- Pass `x` as a dict"),
    "a sampler of 3 fields for 2": (
        lambda: _X2, lambda: _DEC_OUT, "3 fields",
        r"`sampler` plans 3 fields \(lengths of shape \(20, 3\)\), but `x` has 2: "
        r"\['enc', 'dec'\]\n- Build the sampler with one length column per field"),
}


def _pooled_model():
    import keras

    model = keras.Sequential([keras.Input((None, 1)), keras.layers.GlobalAveragePooling1D(),
                              keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    return model


# Every executor that takes fields: called on (x, y, sampler); those without a sampler plan
# the lengths themselves (the sampler cases do not apply to them).
EXECUTORS = {
    "bucketed_dataset": lambda x, y, s: sp.bucketed_dataset(x, y, sampler=s),
    "bucketed_pydataset": lambda x, y, s: sp.bucketed_pydataset(x, y, sampler=s),
    "replica_dataset_fn": lambda x, y, s: replica_dataset_fn(x, y, sampler=s)(
        tf.distribute.InputContext()),
    "distributed_bucketed_dataset": lambda x, y, s: sp.distributed_bucketed_dataset(
        tf.distribute.get_strategy(), x, y, sampler=s),
    "service_bucketed_dataset": lambda x, y, s: service_bucketed_dataset(
        "grpc://localhost:1", x, y, sampler=s),  # refused before any connection
    "fit_per_length": lambda x, y, s: sp.fit_per_length(_pooled_model(), x, y, verbose=0),
    "fit_separate_models": lambda x, y, s: sp.fit_separate_models(
        lambda group: _pooled_model(), x, y, verbose=0),
}
_NO_SAMPLER = {"fit_per_length", "fit_separate_models"}
_SAMPLER_CASES = {"a sampler on lengths of no field", "a 2-D sampler for one collection",
                  "a sampler of 3 fields for 2"}


@pytest.mark.parametrize(("case", "executor"), [
    (case, executor) for case in sorted(BAD) for executor in sorted(EXECUTORS)
    if case not in _SAMPLER_CASES or executor not in _NO_SAMPLER
])
def test_bad_fields_input_is_refused_clearly_on_every_path(case, executor):
    x, y, sampler, message = BAD[case]
    with pytest.raises(ValueError, match=f"(?s){message}"):
        EXECUTORS[executor](x(), y(), _samplers()[sampler])


def test_packed_dataset_refuses_fields_and_a_2d_sampler():
    """Packing lays sequences of one field back to back in a row: documented refusals."""
    with pytest.raises(ValueError, match=r"`x` is a dict or tuple of fields, but packed rows "
                                         r"hold one sequence collection.*\n- Pack one field"):
        sp.packed_dataset(_X2, _DEC_OUT, sampler=sp.PackSampler(_L(_SRC), batch_size=4))
    with pytest.raises(TypeError, match=r"`sampler`.*PackSampler"):
        sp.packed_dataset(_SRC, np.zeros(20), sampler=_samplers()["2d"])


# --------------------------------------------------------------------------- Parquet streaming


def _pairs_parquet(path, n: int, seed: int = 0):
    """A list-layout Parquet file of ``n`` examples: a source list column, a decoder field of
    two list columns (steps of two features), and the example's id as its target."""
    import pandas as pd

    src, dec_in, _ = pair_data(n, seed=seed)
    dec2 = [np.stack([d, d * 10], axis=1).astype(np.int32) for d in dec_in]
    pd.DataFrame({"src": [s.tolist() for s in src], "d0": [d[:, 0].tolist() for d in dec2],
                  "d1": [d[:, 1].tolist() for d in dec2], "id": np.arange(n)}).to_parquet(path)
    return src, dec2


@pytest.mark.parametrize("rows_per_read", [1, 7, 1000])
def test_parquet_fields_stream_into_per_field_padded_batches(tmp_path, rows_per_read):
    pytest.importorskip("pyarrow")
    from seqprep.running._distributed import parquet_sequence_dataset

    n = 41
    path = tmp_path / "pairs.parquet"
    src, dec2 = _pairs_parquet(path, n)
    features = {"enc": "src", "dec": ["d0", "d1"]}
    chunks = list(sp.iter_parquet_sequences(path, features=features, target="id",
                                            dtype="int32", rows_per_read=rows_per_read))
    assert np.concatenate([c.lengths["enc"] for c in chunks]).tolist() == [len(s) for s in src]
    assert np.concatenate([c.lengths["dec"] for c in chunks]).tolist() == [len(d) for d in dec2]
    ds = parquet_sequence_dataset(path, features=features, target="id", dtype="int32",
                                  rows_per_read=rows_per_read)
    longest = lambda e: tf.maximum(tf.shape(e[0]["enc"])[0], tf.shape(e[0]["dec"])[0])  # noqa: E731
    batches = ds.apply(sp.bucket_by_length([5, 9], batch_size=4, length_fn=longest, seed=0,
                                           padding=({"enc": "pre"}, "post")))
    seen = Counter()
    for xb, ids in batches:
        ids = ids.numpy()
        seen.update(ids.tolist())
        np.testing.assert_array_equal(xb["enc"].numpy(),
                                      sp.pad_sequences([src[i] for i in ids], padding="pre"))
        np.testing.assert_array_equal(xb["dec"].numpy(),
                                      sp.pad_sequences([dec2[i] for i in ids], padding="post"))
    assert seen == Counter(range(n)), "every example exactly once"


def test_parquet_fields_refusals(tmp_path):
    import pandas as pd

    long_path = tmp_path / "long.parquet"
    pd.DataFrame({"id": [1, 1, 2], "a": [1.0, 2.0, 3.0], "b": [4.0, 5.0, 6.0]}).to_parquet(
        long_path)
    with pytest.raises(ValueError, match=r"(?s)`features` is a dict of fields, but .* the long "
                                         r"layout.*\n- Store one row per example"):
        list(sp.iter_parquet_sequences(long_path, id="id", features={"x": "a", "y": "b"}))
    with pytest.raises(ValueError, match=r"`features` as a dict must map field names"):
        list(sp.iter_parquet_sequences(long_path, id="id", features={}))
    lists = tmp_path / "lists.parquet"
    pd.DataFrame({"a": [[1.0, 2.0]], "b": [[3.0]], "c": [[4.0]]}).to_parquet(lists)
    with pytest.raises(ValueError, match=r"equal lengths in each row; row 0 has 2 and 1"):
        list(sp.iter_parquet_sequences(lists, features={"x": ["a", "b"], "y": "c"}))
