"""A newcomer's first hour (issue 18, part 3): each trap the issue met, shut.

One test (or one small table) per item: the reference model keeps its name, ``dir(seqprep)``
lists public names, ``count_shapes`` / ``report`` count the shapes each backend runs (with
``pad_to="auto"``, resolved by the dataset's own rule), executors of a sampler say how to
build one, zero-length sequences are warned or refused by one rule, mixed nesting is
refused, and the command line says what it does.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import sys
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import seqprep as sp
from seqprep.planning._shapes import budget_grid, compiling_backend, keras_backend
from seqprep.tools.cli import main as cli_main


def _lognormal(n, seed=0):
    rng = np.random.default_rng(seed)
    return np.clip(rng.lognormal(3.5, 0.8, n).astype(np.int64), 2, 400)


# --------------------------------------------------------------------------- names


def test_reference_rnn_keeps_the_name_it_is_given():
    assert sp.models.reference_rnn(input_dim=3, name="my_model").name == "my_model"
    assert sp.models.reference_rnn(input_dim=3).name == "reference_rnn"


def test_dir_of_the_package_lists_public_names_only():
    names = dir(sp)
    assert {"Any", "annotations", "importlib", "attach"}.isdisjoint(names)
    assert set(names) | {"__version__"} == set(sp.__all__)
    assert all(hasattr(sp, name) for name in names)


# --------------------------------------------------------------------------- shapes per backend


@pytest.mark.parametrize("tokens", [False, True])
def test_auto_is_resolved_by_the_datasets_rule_for_each_backend(tokens):
    budget = {"max_tokens": 4096, "boundaries": [20, 40, 80]} if tokens else {"batch_size": 64}
    s = sp.BucketSampler(_lognormal(3000), **budget)
    on_jax = "bucket" if tokens else budget_grid(s)
    for kwargs in ({"epochs": 1}, {"epochs": 3, "epoch": 2}):
        assert sp.count_shapes(s, pad_to="auto", backend="jax", **kwargs) == sp.count_shapes(
            s, pad_to=on_jax, **kwargs)
        for other in ("tensorflow", "torch"):
            assert sp.count_shapes(s, pad_to="auto", backend=other, **kwargs) == (
                sp.count_shapes(s, pad_to="batch", **kwargs))
    assert s.report(backend="jax")["n_shapes"] == sp.count_shapes(s, backend="jax")
    assert s.report(backend="torch")["n_shapes"] == sp.count_shapes(s, pad_to="batch")


def test_the_issues_case_jax_trains_on_the_grid_not_on_every_batch_width():
    s = sp.BucketSampler(_lognormal(4000), batch_size=64)
    on_jax, per_batch = sp.count_shapes(s, backend="jax"), sp.count_shapes(s, pad_to="batch")
    assert on_jax <= sp.planning._shapes.DEFAULT_MAX_WIDTHS + 1 < per_batch


@pytest.mark.backend
def test_count_shapes_counts_what_bucketed_dataset_yields_on_this_backend():
    lengths = _lognormal(600, seed=3)
    x = [np.zeros((n, 1), "float32") for n in lengths]
    s = sp.BucketSampler(lengths, batch_size=16, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # many shapes on JAX: this test counts them itself
        ds = sp.bucketed_dataset(x, sampler=s, epoch=0)
    seen = {tuple(batch.shape[:2]) for batch in ds.take(len(s))}
    assert len(seen) == sp.count_shapes(s) == s.report(epoch=0)["n_shapes"]


def test_keras_backend_is_read_without_importing_keras(monkeypatch, tmp_path):
    import keras

    assert keras_backend() == keras.config.backend()
    monkeypatch.delitem(sys.modules, "keras")
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    assert keras_backend() == "jax" and compiling_backend() == "jax"
    monkeypatch.delenv("KERAS_BACKEND")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    assert keras_backend() == "tensorflow" and compiling_backend() is None
    (tmp_path / "keras.json").write_text(json.dumps({"backend": "torch"}))
    assert keras_backend() == "torch"
    assert "keras" not in sys.modules


# --------------------------------------------------------------------------- a sampler, please


@pytest.mark.parametrize(
    ("call", "kind", "shown"),
    [
        (lambda x: sp.bucketed_dataset(x, [0, 1, 0], batch_size=64), "BucketSampler",
         "batch_size=64"),
        (lambda x: sp.bucketed_pydataset(x, [0, 1, 0], batch_size=8, shuffle=False),
         "BucketSampler", "batch_size=8, shuffle=False"),
        (lambda x: sp.packed_dataset(x, batch_size=2), "PackSampler", "batch_size=2"),
        (lambda x: sp.bucketed_dataset(x), "BucketSampler", "batch_size=32"),
    ],
)
def test_executors_of_a_sampler_say_which_sampler_to_build(call, kind, shown):
    x = [[1, 2], [3], [4, 5, 6]]
    with pytest.raises(TypeError) as err:
        call(x)
    message = str(err.value)
    assert f"- Pass sampler=seqprep.{kind}(seqprep.sequence_lengths(x), {shown})." in message
    assert "`sampler`" in message


def test_a_sampler_passed_as_usual_goes_through():
    x = [[1, 2], [3], [4, 5, 6]]
    ds = sp.bucketed_dataset(x, sampler=sp.BucketSampler([2, 1, 3], batch_size=3,
                                                         shuffle=False))
    (batch,) = [b.numpy().tolist() for b in ds]
    assert sorted(batch) == [[1, 2, 0], [3, 0, 0], [4, 5, 6]]
    with pytest.raises(TypeError, match="unexpected keyword argument 'colour'"):
        sp.bucketed_dataset(x, sampler=sp.BucketSampler([2, 1, 3], batch_size=3), colour=1)


# --------------------------------------------------------------------------- zero-length


def test_a_sampler_warns_how_many_sequences_are_empty():
    with pytest.warns(UserWarning, match=r"^2 of 5 sequences in `lengths` have length 0 "
                                         r"\(positions \[1, 3\]\)"):
        sp.BucketSampler([3, 0, 2, 0, 4], batch_size=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sp.BucketSampler([3, 1, 2], batch_size=2)


@pytest.mark.parametrize(
    ("lengths", "pad_to", "expected"),
    [
        ([0, 0, 3, 4], "batch", [1, 4]),
        ([0, 0, 3, 4], "bucket", [1, 4]),
        ([0, 0, 0, 0], "batch", [1, 1]),
        ([1, 0, 3, 4], "batch", [1, 4]),
    ],
)
def test_a_batch_of_empty_sequences_is_one_padded_step_wide(lengths, pad_to, expected):
    with pytest.warns(UserWarning, match="have length 0"):
        s = sp.BucketSampler(lengths, boundaries=[2], batch_size=2, shuffle=False)
    assert s.plan(0).widths(pad_to, s.lengths).tolist() == expected


@pytest.mark.backend
def test_empty_sequences_train_as_fully_padded_rows():
    import keras

    x = [np.ones((n, 2), "float32") for n in (0, 0, 3, 4)]
    with pytest.warns(UserWarning, match="2 of 4 sequences"):
        s = sp.BucketSampler(sp.sequence_lengths(x), boundaries=[1], batch_size=2,
                             shuffle=False)
    ds = sp.bucketed_dataset(x, np.array([0.0, 1.0, 0.0, 1.0]), sampler=s, pad_to="batch")
    assert [tuple(b[0].shape) for b in ds] == [(2, 1, 2), (2, 4, 2)]
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((None, 2)), keras.layers.Masking(),
                              keras.layers.SimpleRNN(2), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    loss = model.fit(ds, epochs=1, verbose=0).history["loss"][0]
    assert np.isfinite(loss)


def test_exact_length_groups_refuse_empty_sequences():
    with pytest.raises(ValueError, match=r"2 sequences of length 0 \(positions \[0, 2\]\).*"
                                         r"\n- Drop them"):
        sp.plan_per_length([0, 3, 0, 3], batch_size=2)
    plan = sp.plan_per_length([0, 3, 0, 3], batch_size=2, group_by=[2])
    assert sorted(plan.rows.tolist()) == [0, 1, 2, 3]


# --------------------------------------------------------------------------- nesting


@pytest.mark.parametrize(
    "sequences",
    [
        [[1, 2], [3, [4, 5]]],  # the issue's case: a nested step among scalar steps
        [[1, 2], [[3, 4]]],  # scalar steps in one sequence, vector steps in another
        [[[1, 2], [3]]],  # vector steps of different sizes
        [np.zeros((3, 2)), np.zeros((2, 3))],  # arrays with other step shapes
        [np.zeros((3, 2)), [[1, 2, 3]]],
    ],
)
def test_sequence_lengths_refuses_mixed_nesting(sequences):
    with pytest.raises(ValueError, match=r"step shape|steps of different shapes") as err:
        sp.sequence_lengths(sequences)
    assert "\n- " in str(err.value)


@settings(max_examples=40, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 5), min_size=1, max_size=8),
    step=st.sampled_from([(), (2,), (1, 3)]),
    as_arrays=st.booleans(),
)
def test_sequence_lengths_agrees_with_the_one_normalisation(lengths, step, as_arrays):
    seqs = [np.arange(n * int(np.prod(step)), dtype=np.int64).reshape(n, *step) for n in lengths]
    if not as_arrays:
        seqs = [s.tolist() for s in seqs]
    got = sp.sequence_lengths(seqs)
    assert got.tolist() == lengths
    if any(lengths):
        from seqprep._core.ragged import as_ragged

        assert as_ragged(seqs).lengths.tolist() == lengths


@settings(max_examples=40, deadline=None)
@given(lengths=st.lists(st.integers(1, 5), min_size=1, max_size=8), data=st.data())
def test_one_nested_step_anywhere_is_refused(lengths, data):
    assume(sum(lengths) >= 2)  # one nested step alone would be a consistent vector step
    seqs = [list(range(n)) for n in lengths]
    i = data.draw(st.integers(0, len(seqs) - 1), label="sequence")
    t = data.draw(st.integers(0, lengths[i] - 1), label="step")
    seqs[i][t] = [seqs[i][t], 0]
    with pytest.raises(ValueError, match=r"step shape|steps of different shapes") as err:
        sp.sequence_lengths(seqs)
    assert re.search(rf"(element|equence) {i}\b", str(err.value))


# --------------------------------------------------------------------------- planners


@pytest.mark.parametrize("call", [lambda: sp.width_grid([1, 2, 3]),
                                  lambda: sp.count_shapes(np.array([1, 2, 3]))])
def test_shape_helpers_want_a_sampler_not_lengths(call):
    with pytest.raises(TypeError, match=r"must be a seqprep\.BucketSampler.*\n- If these are "
                                        r"lengths, build the sampler first"):
        call()


@pytest.mark.parametrize(
    "sampler",
    [lambda: sp.BucketSampler([1, 2, 3, 4], batch_size=2),
     lambda: sp.PackSampler([1, 2, 3, 4], batch_size=2)],
    ids=["BucketSampler", "PackSampler"],
)
@pytest.mark.parametrize("version", [99, 0, "1", None])
def test_load_state_dict_refuses_an_unknown_version(sampler, version):
    s = sampler()
    state = s.state_dict()
    with pytest.raises(ValueError, match=rf"version={version!r}.*\n- Pass a state saved"):
        s.load_state_dict({**state, "version": version})
    s.load_state_dict(state)  # the saved version itself still loads


@pytest.mark.parametrize("batches", [[[0, 0]], [[0], [1, 0]], [[1], [0], [1]]])
def test_padding_report_refuses_an_index_counted_twice(batches):
    with pytest.raises(ValueError, match=r"holds index \d 2 times.*\n- Pass the batches of one "
                                         r"epoch"):
        sp.padding_report([3, 4], batches)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 60), batch_size=st.integers(1, 9), seed=st.integers(0, 9))
def test_padding_report_of_a_plan_counts_every_example_once(n, batch_size, seed):
    lengths = np.random.default_rng(seed).integers(1, 30, n)
    s = sp.BucketSampler(lengths, batch_size=batch_size, seed=seed)
    r = sp.padding_report(lengths, s.batches(0))
    assert r["n_examples"] == n and r["real_tokens"] == int(lengths.sum())


def test_length_mask_says_how_many_bytes_instead_of_memory_error():
    with pytest.raises(ValueError, match=r"1,000,000,000,000 bytes.*\n- If a length is wrong"):
        sp.length_mask([10**12])
    assert sp.length_mask([2, 1]).tolist() == [[True, True], [True, False]]


# --------------------------------------------------------------------------- command line


def _run(argv):
    with contextlib.redirect_stdout(io.StringIO()) as out, \
            contextlib.redirect_stderr(io.StringIO()) as err:
        status = cli_main(argv)
    return status, out.getvalue(), err.getvalue()


def test_help_texts_say_what_the_commands_do():
    status, demo, _ = _run(["demo", "--help"])
    assert status == 0
    flat = " ".join(demo.split())
    assert "packed rows" in flat and "five batching strategies" in flat
    status, analyze, _ = _run(["analyze", "--help"])
    flat = " ".join(analyze.split())
    assert "five strategies" in flat and "two plots" in flat and "seqprep for JAX" in flat


def test_analyze_reads_the_only_column_of_a_one_column_table(tmp_path):
    path = tmp_path / "one.csv"
    pd.DataFrame({"n": [3, 5, 9, 40, 2, 7]}).to_csv(path, index=False)
    status, out, err = _run(["analyze", str(path), "--out", str(tmp_path)])
    assert status == 0, err
    assert "6 sequences, lengths 2..40" in out
    assert sp.read_lengths(path).tolist() == [3, 5, 9, 40, 2, 7]


def test_cli_errors_name_flags_not_python_arguments(tmp_path):
    path = tmp_path / "two.csv"
    pd.DataFrame({"n": [3, 5], "score": [0.5, 1.5]}).to_csv(path, index=False)
    status, _, err = _run(["analyze", str(path), "--column", "score", "--out", str(tmp_path)])
    assert status == 2
    assert "`--id`" in err and "`id=`" not in err and "id=" not in err.replace("--id", "")
