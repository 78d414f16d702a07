"""Shared options (``sp.Options``, ``sp.PlanOptions``) and the 12-parameter rule (issue #19, 5).

Checked: every declared option refuses a bad value with a message naming it (a table) and keeps
a good one (a Hypothesis property over random sets of options); ``changed()`` and ``repr`` show
exactly the options set; every executor refuses an option it does not read, naming the option
and itself; no public callable takes more than 12 parameters.
"""

from __future__ import annotations

import dataclasses
import inspect

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import seqprep as sp
from seqprep._core.options import DECLARED, Options, options_for
from seqprep.planning._options import PLAN_READS, PlanOptions

# --------------------------------------------------------------------------- declared once


def test_every_option_is_declared_once_and_is_a_field_of_one_option_class():
    options = [f.name for f in dataclasses.fields(Options)]
    plan = [f.name for f in dataclasses.fields(PlanOptions)]
    assert {n: d.owner for n, d in DECLARED.items()} == {
        **dict.fromkeys(options, "Options"), **dict.fromkeys(plan, "PlanOptions")}
    assert sorted(options + plan) == sorted(DECLARED)
    assert not set(options) & set(plan)
    assert tuple(plan) == PLAN_READS  # a BucketSampler reads every knob of PlanOptions
    assert all(d.meaning for d in DECLARED.values())


BAD = [
    # (option class, option, bad value, error, what the message must echo)
    (Options, "truncating", "mid", ValueError, "truncating='mid'"),
    (Options, "truncating", {"dec": "mid"}, ValueError, "truncating['dec']='mid'"),
    (Options, "dtype", "nope", TypeError, "dtype='nope'"),
    (Options, "dtype", {"enc": "nope"}, TypeError, "dtype['enc']='nope'"),
    (Options, "allow_nonfinite", "yes", TypeError, "allow_nonfinite='yes'"),
    (Options, "allow_nonfinite", 1, TypeError, "allow_nonfinite=1"),
    (Options, "data_parallel", 0, ValueError, "data_parallel=0"),
    (Options, "data_parallel", "all", ValueError, "data_parallel='all'"),
    (Options, "reshuffle_each_iteration", "no", TypeError, "reshuffle_each_iteration='no'"),
    (Options, "epochs", 0, ValueError, "epochs=0"),
    (Options, "epochs", 1.5, TypeError, "epochs=1.5"),
    (Options, "sorted_epochs", -1, ValueError, "sorted_epochs=-1"),
    (Options, "drop_remainder", None, TypeError, "drop_remainder=None"),
    (PlanOptions, "merge_leftovers", "no", TypeError, "merge_leftovers='no'"),
    (PlanOptions, "quadratic_length", 0, ValueError, "quadratic_length=0"),
    (PlanOptions, "quadratic_length", 2.0, TypeError, "quadratic_length=2.0"),
    (PlanOptions, "field_tokens", "mean", ValueError, "field_tokens='mean'"),
    (PlanOptions, "compile_cost", -1, ValueError, "compile_cost=-1"),
    (PlanOptions, "compile_cost", float("nan"), ValueError, "compile_cost=nan"),
    (PlanOptions, "compile_cost", "1M", TypeError, "compile_cost='1M'"),
    (PlanOptions, "compile_cost", True, TypeError, "compile_cost=True"),
    (PlanOptions, "train_epochs", 0, ValueError, "train_epochs=0"),
]


@pytest.mark.parametrize(("kind", "name", "value", "error", "echo"), BAD,
                         ids=[f"{b[1]}={b[2]!r}" for b in BAD])
def test_a_bad_option_is_refused_naming_it(kind, name, value, error, echo):
    with pytest.raises(error) as err:
        kind(**{name: value})
    message = str(err.value)
    assert f"`{name}" in message and echo in message
    assert "\n- " in message  # the fix


GOOD = {
    "truncating": st.sampled_from(["pre", "post"])
    | st.fixed_dictionaries({"enc": st.sampled_from(["pre", "post"])}),
    "dtype": st.sampled_from([None, "float16", "int32", np.float64]),
    "allow_nonfinite": st.booleans(),
    "targets_field": st.none() | st.sampled_from(["decoder", 1]),
    "data_parallel": st.none() | st.just("auto") | st.integers(1, 8),
    "reshuffle_each_iteration": st.booleans(),
    "epochs": st.integers(1, 5),
    "sorted_epochs": st.none() | st.integers(0, 5),
    "drop_remainder": st.booleans(),
    "merge_leftovers": st.booleans(),
    "quadratic_length": st.none() | st.integers(1, 4096),
    "field_tokens": st.sampled_from(["sum", "max"]),
    "field_weights": st.none() | st.just((1.0, 2.0)),
    "compile_cost": st.none() | st.sampled_from([0.0, 1.5, 1e6]),
    "train_epochs": st.integers(1, 100),
}


@settings(max_examples=60, deadline=None)
@given(data=st.data(), kind=st.sampled_from([Options, PlanOptions]))
def test_good_options_are_kept_and_only_changed_ones_are_shown(data, kind):
    names = [f.name for f in dataclasses.fields(kind)]
    chosen = data.draw(st.lists(st.sampled_from(names), unique=True), label="options")
    values = {n: data.draw(GOOD[n], label=n) for n in chosen}
    built = kind(**values)
    for f in dataclasses.fields(kind):
        assert getattr(built, f.name) == values.get(f.name, f.default)
    changed = {n: v for n, v in values.items() if v != dataclasses.fields(kind)[
        names.index(n)].default}
    assert built.changed() == changed
    assert repr(built) == f"{kind.__name__}(" + ", ".join(
        f"{k}={v!r}" for k, v in built.changed().items()) + ")"
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.epochs = 3  # type: ignore[misc]


def test_options_for_takes_none_a_dict_or_the_class_and_refuses_the_rest():
    assert options_for(None, "f", ("epochs",)) == Options()
    assert options_for({"epochs": 2}, "f", ("epochs",)) == Options(epochs=2)
    with pytest.raises(TypeError, match=r"unknown keys \['epoch'\]"):
        options_for({"epoch": 2}, "f", ("epochs",))
    with pytest.raises(TypeError, match="`options` of `BucketSampler` must be a seqprep.Plan"):
        options_for(Options(), "BucketSampler", PLAN_READS, kind=PlanOptions)
    with pytest.raises(ValueError, match=r"sets epochs=2, which `f` does not use"):
        options_for(Options(epochs=2), "f", ("dtype",))
    # An option set to its default is not "set": any executor accepts it.
    assert options_for(Options(epochs=1), "f", ("dtype",)) == Options()


# --------------------------------------------------------------------------- executors

X = [[1, 2, 3], [4], [5, 6], [7, 8, 9, 10]]
LENGTHS = sp.sequence_lengths(X)


def _bucket_sampler():
    return sp.BucketSampler(LENGTHS, boundaries=[3], batch_size=2, shuffle=False)


def _pack_sampler():
    return sp.PackSampler(LENGTHS, batch_size=2, shuffle=False)


REFUSED = [
    # (executor, call with options=..., an option it does not read)
    ("bucketed_dataset", lambda o: sp.bucketed_dataset(X, sampler=_bucket_sampler(), options=o),
     Options(sorted_epochs=1)),
    ("bucketed_pydataset",
     lambda o: sp.bucketed_pydataset(X, sampler=_bucket_sampler(), options=o),
     Options(epochs=2)),
    ("grain_dataset", lambda o: sp.grain_dataset(X, sampler=_bucket_sampler(), options=o),
     Options(reshuffle_each_iteration=False)),
    ("packed_dataset", lambda o: sp.packed_dataset(X, sampler=_pack_sampler(), options=o),
     Options(targets_field="dec")),
    ("fit_per_length", lambda o: sp.fit_per_length(None, X, np.zeros(4), options=o),
     Options(epochs=3)),
    ("replica_dataset_fn",
     lambda o: sp.replica_dataset_fn(X, sampler=_bucket_sampler(), options=o),
     Options(data_parallel=2)),
    ("service_bucketed_dataset",
     lambda o: sp.service_bucketed_dataset("grpc://localhost:1", X, sampler=_bucket_sampler(),
                                           options=o),
     Options(drop_remainder=True)),
]


@pytest.mark.parametrize(("name", "call", "options"), REFUSED, ids=[r[0] for r in REFUSED])
def test_an_executor_refuses_an_option_it_does_not_read(name, call, options):
    (option, value), = options.changed().items()
    with pytest.raises(ValueError) as err:
        call(options)
    message = str(err.value)
    assert f"sets {option}={value!r}, which `{name}` does not use" in message
    assert "reads only:" in message


def test_a_sampler_takes_plan_options_not_executor_options():
    with pytest.raises(TypeError, match=r"must be a seqprep.PlanOptions.*Options\(epochs=2\)"):
        sp.BucketSampler(LENGTHS, batch_size=2, options=Options(epochs=2))
    merged = sp.BucketSampler(LENGTHS, boundaries=[3], batch_size=3, shuffle=False)
    kept = sp.BucketSampler(LENGTHS, boundaries=[3], batch_size=3, shuffle=False,
                            options=PlanOptions(merge_leftovers=False))
    assert len(merged) == 2 and len(kept) == 2
    assert [b.tolist() for b in kept.batches(0)] == [[1, 2], [0, 3]]
    assert merged.merge_leftovers and not kept.merge_leftovers


def test_pydataset_takes_keras_own_arguments_as_kwargs_and_refuses_others():
    ds = sp.bucketed_pydataset(X, sampler=_bucket_sampler(), workers=2, max_queue_size=3)
    assert (ds.workers, ds.max_queue_size, ds.use_multiprocessing) == (2, 3, False)
    with pytest.raises(TypeError, match=r"unexpected keyword argument\(s\): colour='red'"):
        sp.bucketed_pydataset(X, sampler=_bucket_sampler(), colour="red")
    with pytest.raises(ValueError, match="`workers`"):
        sp.bucketed_pydataset(X, sampler=_bucket_sampler(), workers=0)


MOVED = [
    # (executor, call with one keyword that moved into options=, the fix it must show)
    ("bucketed_dataset", lambda: sp.bucketed_dataset(X, sampler=_bucket_sampler(),
                                                     dtype="float16"),
     "options=seqprep.Options(dtype='float16')"),
    ("packed_dataset", lambda: sp.packed_dataset(X, sampler=_pack_sampler(), epochs=2),
     "options=seqprep.Options(epochs=2)"),
    ("grain_dataset", lambda: sp.grain_dataset(X, sampler=_bucket_sampler(),
                                               allow_nonfinite=True),
     "options=seqprep.Options(allow_nonfinite=True)"),
    ("bucketed_pydataset", lambda: sp.bucketed_pydataset(X, sampler=_bucket_sampler(),
                                                         targets_field="dec"),
     "options=seqprep.Options(targets_field='dec')"),
    ("fit_per_length", lambda: sp.fit_per_length(None, X, np.zeros(4), drop_remainder=True),
     "options=seqprep.Options(drop_remainder=True)"),
    ("BucketSampler", lambda: sp.BucketSampler(LENGTHS, batch_size=2, quadratic_length=8),
     "options=seqprep.PlanOptions(quadratic_length=8)"),
]


@pytest.mark.parametrize(("name", "call", "fix"), MOVED, ids=[m[0] for m in MOVED])
def test_an_option_passed_as_a_keyword_says_where_it_went(name, call, fix):
    with pytest.raises(TypeError) as err:
        call()
    message = str(err.value)
    assert message.startswith(f"`{name}` takes `") and "in `options`, not as a keyword" in message
    assert message.endswith(f"- Pass {fix}.")


def test_an_option_of_the_other_class_says_where_it_is_read():
    with pytest.raises(TypeError) as err:
        sp.replica_dataset_fn(X, sampler=_bucket_sampler(), merge_leftovers=False)
    assert str(err.value) == (
        "`replica_dataset_fn` takes no `merge_leftovers`: it belongs in seqprep.PlanOptions. "
        "Received: merge_leftovers=False\n- Pass options=seqprep.PlanOptions("
        "merge_leftovers=False) where it is read (e.g. to the sampler).")
    with pytest.raises(TypeError,
                       match=r"(?s)`BucketSampler` takes no `epochs`.*Options\(epochs=2\)"):
        sp.BucketSampler(LENGTHS, batch_size=2, epochs=2)


# --------------------------------------------------------------------------- at most 12

# The one public callable that keeps a longer signature by design: tf.data's own.
BY_DESIGN = {"bucket_by_sequence_length"}



def _public_callables():
    for name in sp.__all__:
        obj = getattr(sp, name)
        if inspect.isclass(obj):
            yield f"{name}.__init__", obj.__init__
            for attr, member in vars(obj).items():
                if not attr.startswith("_") and inspect.isfunction(member):
                    yield f"{name}.{attr}", member
        elif callable(obj):
            yield name, obj


def _count(fn) -> int:
    kinds = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    return sum(1 for p in inspect.signature(fn).parameters.values()
               if p.name != "self" and p.kind not in kinds)


def test_no_public_callable_takes_more_than_12_parameters():
    counts = dict((name, _count(fn)) for name, fn in _public_callables())
    assert len(counts) > 80  # the walk sees the whole API
    over = {n: c for n, c in counts.items() if c > 12 and n not in BY_DESIGN}
    assert not over, f"public callables over 12 parameters: {over}"
