"""The bad-input table (issue 11): every refusal names the argument, shows what it received
and says the fix.

Each case is one bad call to the public API or the command line. The test asserts the three
parts of the message: the argument in backticks (the flag, ``--max-tokens``, on the command
line), the value received, and a fix line (``- If ..., do ...`` / ``- Pass ...`` or a sentence
starting ``Pass``). The second half checks that no data is dropped or poisoned without a word.
"""

from __future__ import annotations

import contextlib
import functools
import io
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import seqprep as sp
from seqprep.tools.cli import main as cli_main

_FIX = re.compile(r"(^|\n)- \S|\bPass\b|\bpass `?\w")

X = [[1, 2, 3], [4], [5, 6], [7, 8, 9, 10]]
XF = [np.ones((n, 2), "float32") for n in (3, 1, 2, 4)]
LENS = [3, 1, 2, 4]


@dataclass(frozen=True)
class Case:
    id: str
    call: Callable[[], Any]
    names: str  # the argument (in backticks) or the CLI flag
    received: str  # what the message must echo
    exc: type[BaseException] | tuple[type[BaseException], ...] = (ValueError, TypeError)


@functools.cache
def _model(stateful: bool = False):
    import keras

    if stateful:
        inputs = keras.Input(batch_shape=(2, 4, 2))
        h = keras.layers.SimpleRNN(2, stateful=True, return_sequences=True)(inputs)
        model = keras.Model(inputs, keras.layers.Dense(1)(h))
    else:
        model = keras.Sequential([keras.Input((None, 2)), keras.layers.GRU(2),
                                  keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    return model


def _uncompiled():
    import keras

    return keras.Sequential([keras.Input((None, 2)), keras.layers.GRU(2)])


def _sampler(**kw):
    return sp.BucketSampler(LENS, boundaries=[3], batch_size=2, shuffle=False, **kw)


def _consumed():
    gen = (np.ones(n) for n in (1, 2))
    list(gen)
    return gen


def _dataset():
    import tensorflow as tf

    return tf.data.Dataset.from_tensor_slices(np.ones((4, 3, 2), "float32"))


def _nan_x():
    x = [a.copy() for a in XF]
    x[2][1, 0] = np.nan
    return x


def _fitted():
    return sp.Bucketer(2).fit([1, 2, 3, 10, 20])


def _bucketed(**kw):
    kw.setdefault("sampler", _sampler())
    return sp.bucketed_dataset(kw.pop("x", X), kw.pop("y", None), **kw)


def _fit(**kw):
    x, y = kw.pop("x", XF), kw.pop("y", np.zeros(4, "float32"))
    return sp.fit_per_length(kw.pop("model", _model()), x, y, verbose=0, **kw)


def _bbl(**kw):
    return sp.bucket_by_length(kw.pop("boundaries", [3]), **kw)


def _state_of_other_sampler():
    return _sampler().load_state_dict(sp.BucketSampler(LENS, batch_size=3).state_dict())


CASES = [
    # ---------------------------------------------------------------- pad_sequences
    Case("pad-padding", lambda: sp.pad_sequences(X, padding="mid"), "`padding`", "'mid'"),
    Case("pad-truncating", lambda: sp.pad_sequences(X, truncating="middle"), "`truncating`",
         "'middle'"),
    Case("pad-maxlen-zero", lambda: sp.pad_sequences(X, maxlen=0), "`maxlen`", "maxlen=0"),
    Case("pad-maxlen-negative", lambda: sp.pad_sequences(X, maxlen=-3), "`maxlen`", "-3"),
    Case("pad-maxlen-float", lambda: sp.pad_sequences(X, maxlen=2.5), "`maxlen`", "2.5"),
    Case("pad-maxlen-bool", lambda: sp.pad_sequences(X, maxlen=True), "`maxlen`", "True"),
    Case("pad-maxlen-str", lambda: sp.pad_sequences(X, maxlen="10"), "`maxlen`", "'10'"),
    Case("pad-dtype-unknown", lambda: sp.pad_sequences(X, dtype="int33"), "`dtype`", "int33"),
    Case("pad-value-str", lambda: sp.pad_sequences(X, value="x"), "`value`", "'x'"),
    Case("pad-lossy-float-to-int", lambda: sp.pad_sequences([[1.5, 2.0]], dtype="int32"),
         "`dtype`", "1.5"),
    Case("pad-overflow", lambda: sp.pad_sequences([[300]], dtype="uint8"), "`dtype`", "300"),
    Case("pad-a-string", lambda: sp.pad_sequences("abc"), "`sequences`", "'abc'"),
    Case("pad-an-int", lambda: sp.pad_sequences(5), "`sequences`", "int"),
    Case("pad-a-dict", lambda: sp.pad_sequences({"a": [1]}), "`sequences`", "dict"),
    Case("pad-one-flat-sequence", lambda: sp.pad_sequences([1, 2, 3]), "`sequences`", "1"),
    Case("pad-mixed-step-shapes", lambda: sp.pad_sequences([np.ones((2, 3)), np.ones((2, 4))]),
         "`sequences`", "(4,)"),
    Case("pad-consumed-generator", lambda: sp.pad_sequences(_consumed()), "`sequences`",
         "generator"),
    Case("pad-multiple-of-zero", lambda: sp.pad_sequences(X, pad_to_multiple_of=0),
         "`pad_to_multiple_of`", "pad_to_multiple_of=0"),
    Case("pad-multiple-of-bool", lambda: sp.pad_sequences(X, pad_to_multiple_of=True),
         "`pad_to_multiple_of`", "True"),
    Case("pad-1d-array", lambda: sp.pad_sequences(np.arange(5)), "`sequences`", "(5,)"),
    # ---------------------------------------------------------------- lengths, masks, unpad
    Case("lengths-of-int", lambda: sp.sequence_lengths(7), "`sequences`", "int"),
    Case("lengths-of-str", lambda: sp.sequence_lengths("abc"), "`sequences`", "'abc'"),
    Case("lengths-of-ints", lambda: sp.sequence_lengths([1, 2]), "`sequences`", "1"),
    Case("lengths-of-dataset", lambda: sp.sequence_lengths(_dataset()), "`sequences`",
         "Dataset"),
    Case("unpad-count", lambda: sp.unpad(np.zeros((2, 3)), [1, 2, 3]), "`lengths`", "3"),
    Case("unpad-padding", lambda: sp.unpad(np.zeros((2, 3)), [1, 2], padding="mid"),
         "`padding`", "'mid'"),
    Case("unpad-negative", lambda: sp.unpad(np.zeros((2, 3)), [1, -2]), "`lengths`", "-2"),
    Case("unpad-too-long", lambda: sp.unpad(np.zeros((2, 3)), [1, 5]), "`lengths`", "5"),
    Case("mask-negative", lambda: sp.length_mask([2, -1]), "`lengths`", "-1"),
    Case("mask-padding", lambda: sp.length_mask([2, 1], padding="left"), "`padding`", "'left'"),
    Case("mask-sequences-for-lengths", lambda: sp.length_mask([[1, 2], [3]]), "`lengths`",
         "sequences"),
    Case("mask-float-lengths", lambda: sp.length_mask([1.5, 2]), "`lengths`", "float64"),
    Case("mask-bool-lengths", lambda: sp.length_mask([True, False]), "`lengths`", "bool"),
    Case("mask-maxlen-bool", lambda: sp.length_mask([1, 2], maxlen=True), "`maxlen`", "True"),
    Case("mask-maxlen-negative", lambda: sp.length_mask([1, 5], maxlen=-3), "`maxlen`", "-3"),
    Case("weights-padding", lambda: sp.sequence_weights([1, 2], padding="mid"), "`padding`",
         "'mid'"),
    Case("weights-negative", lambda: sp.sequence_weights([-4]), "`lengths`", "-4"),
    Case("weights-maxlen-str", lambda: sp.sequence_weights([1], maxlen="5"), "`maxlen`", "'5'"),
    Case("cudnn-left-padded", lambda: sp.check_cudnn_mask([[False, True], [True, True]]),
         "`mask`", "0"),
    Case("cudnn-empty-row", lambda: sp.check_cudnn_mask([[True, False], [False, False]]),
         "`mask`", "1"),
    Case("cudnn-1d", lambda: sp.check_cudnn_mask([True, False]), "`mask`", "(2,)"),
    # ---------------------------------------------------------------- Bucketer, boundaries
    Case("bucketer-zero", lambda: sp.Bucketer(0), "`num_buckets`", "0"),
    Case("bucketer-bool", lambda: sp.Bucketer(True), "`num_buckets`", "True"),
    Case("bucketer-float", lambda: sp.Bucketer(2.0), "`num_buckets`", "2.0"),
    Case("bucketer-strategy", lambda: sp.Bucketer(strategy="best"), "`strategy`", "'best'"),
    Case("bucketer-target-high", lambda: sp.Bucketer(target_padding=1.5), "`target_padding`",
         "1.5"),
    Case("bucketer-target-negative", lambda: sp.Bucketer(target_padding=-0.1),
         "`target_padding`", "-0.1"),
    Case("bucketer-target-str", lambda: sp.Bucketer(target_padding="low"), "`target_padding`",
         "'low'"),
    Case("bucketer-batch-zero", lambda: sp.Bucketer(batch_size=0), "`batch_size`", "0"),
    Case("bucketer-both-budgets", lambda: sp.Bucketer(batch_size=2, max_tokens=9),
         "`max_tokens`", "max_tokens=9"),
    Case("bucketer-tokens-zero", lambda: sp.Bucketer(max_tokens=0), "`max_tokens`", "0"),
    Case("bucketer-unfitted", lambda: sp.Bucketer(2).bucket_of([1, 2]), "`boundaries_`",
         "Bucketer(2)"),
    Case("bucketer-fit-empty", lambda: sp.Bucketer(2).fit([]), "`lengths`", "0 elements"),
    Case("bucketer-fit-negative", lambda: sp.Bucketer(2).fit([3, -1]), "`lengths`", "-1"),
    Case("bucketer-fit-sequences", lambda: sp.Bucketer(2).fit([[1, 2], [3]]), "`lengths`",
         "sequences"),
    Case("bucketer-fit-floats", lambda: sp.Bucketer(2).fit([1.5, 2.0]), "`lengths`", "float"),
    Case("bucketer-bucket-of-negative", lambda: _fitted().bucket_of([-1]), "`lengths`", "-1"),
    Case("boundaries-descending", lambda: sp.as_boundaries([5, 3]), "`boundaries`", "[5, 3]"),
    Case("boundaries-zero", lambda: sp.as_boundaries([0, 3]), "`boundaries`", "0"),
    Case("boundaries-float", lambda: sp.as_boundaries([1.5]), "`boundaries`", "1.5"),
    Case("boundaries-2d", lambda: sp.as_boundaries([[1, 2]]), "`boundaries`", "(1, 2)"),
    Case("boundaries-str", lambda: sp.as_boundaries("abc"), "`boundaries`", "abc"),
    Case("boundaries-duplicate", lambda: sp.as_boundaries([3, 3]), "`boundaries`", "[3, 3]"),
    # ---------------------------------------------------------------- BucketSampler
    Case("sampler-sequences-for-lengths", lambda: sp.BucketSampler(X, batch_size=2),
         "`lengths`", "sequences"),
    Case("sampler-rectangular-sequences",
         lambda: sp.BucketSampler(np.ones((4, 3)), batch_size=2), "`lengths`", "(4, 3)"),
    Case("sampler-no-budget", lambda: sp.BucketSampler(LENS), "`batch_size`",
         "batch_size=None"),
    Case("sampler-both-budgets", lambda: sp.BucketSampler(LENS, batch_size=2, max_tokens=8),
         "`max_tokens`", "max_tokens=8"),
    Case("sampler-batch-zero", lambda: sp.BucketSampler(LENS, batch_size=0), "`batch_size`",
         "batch_size=0"),
    Case("sampler-batch-float", lambda: sp.BucketSampler(LENS, batch_size=2.5), "`batch_size`",
         "2.5"),
    Case("sampler-batch-bool", lambda: sp.BucketSampler(LENS, batch_size=True), "`batch_size`",
         "True"),
    Case("sampler-batch-str", lambda: sp.BucketSampler(LENS, batch_size="32"), "`batch_size`",
         "'32'"),
    Case("sampler-tokens-negative", lambda: sp.BucketSampler(LENS, max_tokens=-5),
         "`max_tokens`", "-5"),
    Case("sampler-shuffle-str", lambda: _sampler_kw(shuffle="yes"), "`shuffle`", "'yes'"),
    Case("sampler-shuffle-int", lambda: _sampler_kw(shuffle=1), "`shuffle`", "1"),
    Case("sampler-drop-none", lambda: _sampler_kw(drop_remainder=None), "`drop_remainder`",
         "None"),
    Case("sampler-seed-negative", lambda: _sampler_kw(seed=-1), "`seed`", "-1"),
    Case("sampler-seed-float", lambda: _sampler_kw(seed=1.5), "`seed`", "1.5"),
    Case("sampler-shards-zero", lambda: _sampler_kw(num_shards=0), "`num_shards`", "0"),
    Case("sampler-shard-index-high", lambda: _sampler_kw(num_shards=2, shard_index=2),
         "`shard_index`", "shard_index=2"),
    Case("sampler-shard-index-negative", lambda: _sampler_kw(shard_index=-1), "`shard_index`",
         "-1"),
    Case("sampler-overlong-choice", lambda: _sampler_kw(overlong="skip"), "`overlong`",
         "'skip'"),
    Case("sampler-max-length-zero", lambda: _sampler_kw(max_length=0), "`max_length`", "0"),
    Case("sampler-overlong-error", lambda: _sampler_kw(max_length=2), "`max_length`", "4"),
    Case("sampler-boundaries-descending",
         lambda: sp.BucketSampler(LENS, boundaries=[5, 3], batch_size=2), "`boundaries`",
         "[5, 3]"),
    Case("sampler-boundaries-unfitted",
         lambda: sp.BucketSampler(LENS, boundaries=sp.Bucketer(2), batch_size=2),
         "`boundaries`", "Bucketer(2)"),
    Case("sampler-merge-str", lambda: sp.PlanOptions(merge_leftovers="no"),
         "`merge_leftovers`", "'no'"),
    Case("sampler-quadratic-without-tokens",
         lambda: _sampler_kw(options=sp.PlanOptions(quadratic_length=10)),
         "`quadratic_length`", "10"),
    Case("sampler-quadratic-zero",
         lambda: sp.BucketSampler(LENS, max_tokens=50, options=sp.PlanOptions(quadratic_length=0)),
         "`quadratic_length`", "0"),
    Case("sampler-lengths-int", lambda: sp.BucketSampler(5, batch_size=2), "`lengths`",
         "single int: 5"),
    Case("report-pad-lengths-short", lambda: sp.padding_report(LENS, [[0, 1]], pad_lengths=[1]),
         "`pad_lengths`", "pad_lengths[0]=1"),
    Case("cudnn-mask-values", lambda: sp.check_cudnn_mask([[2, 1]]), "`mask`", "2"),
    Case("bbl-length-fn-str", lambda: _bbl(batch_size=2, length_fn="len"), "`length_fn`",
         "'len'"),
    Case("sampler-empty", lambda: sp.BucketSampler([], batch_size=2), "`lengths`",
         "0 elements"),
    Case("sampler-negative", lambda: sp.BucketSampler([3, -1], batch_size=2), "`lengths`",
         "-1"),
    Case("sampler-float-lengths", lambda: sp.BucketSampler([1.0, 2.0], batch_size=2),
         "`lengths`", "float64"),
    Case("sampler-drops-everything", lambda: sp.BucketSampler(LENS, batch_size=8,
                                                              drop_remainder=True),
         "`drop_remainder`", "drop_remainder=True"),
    Case("sampler-overlong-drops-everything",
         lambda: sp.BucketSampler([5, 6], batch_size=2, max_length=3, overlong="drop"),
         "`overlong`", "overlong='drop'"),
    Case("sampler-set-epoch-negative", lambda: _sampler().set_epoch(-1), "`epoch`", "-1"),
    Case("sampler-batches-epoch-str", lambda: _sampler().batches("a"), "`epoch`", "'a'"),
    Case("sampler-load-state-junk", lambda: _sampler().load_state_dict({"x": 1}), "`state`",
         "x"),
    Case("sampler-load-state-other", _state_of_other_sampler, "`state`", "fingerprint"),
    Case("sampler-report-pad-to", lambda: _sampler().report(pad_to="x"), "`pad_to`", "'x'"),
    Case("padding-report-index", lambda: sp.padding_report(LENS, [np.array([0, 9])]),
         "`batches`", "9"),
    Case("padding-report-negative", lambda: sp.padding_report([1, -1], [np.array([0])]),
         "`lengths`", "-1"),
    # ---------------------------------------------------------------- bucketed_dataset
    Case("ds-sampler-none", lambda: _bucketed(sampler=None), "`sampler`", "None"),
    Case("ds-sampler-other-lengths",
         lambda: _bucketed(sampler=sp.BucketSampler([1, 2], batch_size=2)), "`sampler`", "2"),
    Case("ds-padding", lambda: _bucketed(padding="mid"), "`padding`", "'mid'"),
    Case("ds-pad-to-str", lambda: _bucketed(pad_to="max"), "`pad_to`", "'max'"),
    Case("ds-pad-to-zero", lambda: _bucketed(pad_to=0), "`pad_to`", "0"),
    Case("ds-pad-to-short", lambda: _bucketed(pad_to=2), "`pad_to`", "4"),
    Case("ds-epoch-negative", lambda: _bucketed(epoch=-1), "`epoch`", "-1"),
    Case("ds-epochs-zero", lambda: _bucketed(options=sp.Options(epochs=0)), "`epochs`", "0"),
    Case("ds-y-length", lambda: _bucketed(y=[0, 1]), "`y`", "2"),
    Case("ds-y-nan", lambda: _bucketed(y=[0.0, 1.0, np.nan, 1.0]), "`y`", "y[2]"),
    Case("ds-y-inf", lambda: _bucketed(y=np.array([0.0, np.inf, 0, 0])), "`y`", "inf"),
    Case("ds-x-nan", lambda: _bucketed(x=_nan_x()), "`x`", "x[2]"),
    Case("ds-allow-nonfinite-str", lambda: sp.Options(allow_nonfinite="yes"),
         "`allow_nonfinite`", "'yes'"),
    Case("ds-weight-length", lambda: _bucketed(y=[0, 1, 0, 1], sample_weight=[1.0, 2.0]),
         "`sample_weight`", "2"),
    Case("ds-reshuffle-str", lambda: sp.Options(reshuffle_each_iteration="yes"),
         "`reshuffle_each_iteration`", "'yes'"),
    Case("ds-truncating", lambda: sp.Options(truncating="x"), "`truncating`", "'x'"),
    Case("ds-value-str", lambda: _bucketed(value="a"), "`value`", "'a'"),
    Case("ds-lossy-dtype", lambda: _bucketed(x=[a * 1.5 for a in XF],
                                             options=sp.Options(dtype="int32")),
         "`dtype`", "1.5"),
    Case("ds-x-int", lambda: _bucketed(x=5), "`x`", "int"),
    Case("ds-y-steps-length", lambda: _bucketed(y=[[1, 2, 3], [4], [5, 6], [7]]), "`y`", "y["),
    # ---------------------------------------------------------------- bucket_by_length
    Case("bbl-no-budget", lambda: _bbl(), "`batch_size`", "batch_size=None"),
    Case("bbl-both-budgets", lambda: _bbl(batch_size=2, max_tokens=9), "`max_tokens`",
         "max_tokens=9"),
    Case("bbl-boundaries", lambda: _bbl(boundaries=[4, 2], batch_size=2), "`boundaries`",
         "[4, 2]"),
    Case("bbl-padding", lambda: _bbl(batch_size=2, padding="mid"), "`padding`", "'mid'"),
    Case("bbl-drop-str", lambda: _bbl(batch_size=2, drop_remainder="x"), "`drop_remainder`",
         "'x'"),
    Case("bbl-batch-zero", lambda: _bbl(batch_size=0), "`batch_size`", "0"),
    # ---------------------------------------------------------------- fit_per_length & co
    Case("fit-model-str", lambda: _fit(model="gru"), "`model`", "str"),
    Case("fit-uncompiled", lambda: _fit(model=_uncompiled()), "`model`", "uncompiled"),
    Case("fit-dataset-as-x", lambda: _fit(x=_dataset()), "`x`", "Dataset"),
    Case("fit-y-length", lambda: _fit(y=np.zeros(3)), "`y`", "3"),
    Case("fit-y-nan", lambda: _fit(y=np.array([0, 0, np.nan, 0], "float32")), "`y`", "y[2]"),
    Case("fit-x-nan", lambda: _fit(x=_nan_x()), "`x`", "x[2]"),
    Case("fit-epochs-zero", lambda: _fit(epochs=0), "`epochs`", "0"),
    Case("fit-batch-zero", lambda: _fit(batch_size=0), "`batch_size`", "0"),
    Case("fit-order", lambda: _fit(order="random"), "`order`", "'random'"),
    Case("fit-group-by-str", lambda: _fit(group_by="bucket"), "`group_by`", "'bucket'"),
    Case("fit-group-by-descending", lambda: _fit(group_by=[5, 3]), "`group_by`", "[5, 3]"),
    Case("fit-initial-epoch", lambda: _fit(epochs=2, initial_epoch=2), "`initial_epoch`",
         "initial_epoch=2"),
    Case("fit-drops-everything",
         lambda: _fit(batch_size=2, options=sp.Options(drop_remainder=True)),
         "`drop_remainder`", "drop_remainder=True"),
    Case("fit-drop-str", lambda: sp.Options(drop_remainder="yes"), "`drop_remainder`", "'yes'"),
    Case("fit-validation-form", lambda: _fit(validation_data=[XF]), "`validation_data`",
         "list"),
    Case("fit-owned-kwarg", lambda: _fit(shuffle=True), "`shuffle`", "shuffle"),
    Case("fit-empty-sequence", lambda: _fit(x=[np.ones((0, 2)), *XF[1:]]), "`x`", "[0]"),
    Case("fit-weight-shape", lambda: _fit(sample_weight=[1.0]), "`sample_weight`", "(1,)"),
    Case("fit-seed-negative", lambda: _fit(seed=-1), "`seed`", "-1"),
    Case("plan-batch-zero", lambda: sp.plan_per_length(LENS, batch_size=0), "`batch_size`",
         "0"),
    Case("plan-order", lambda: sp.plan_per_length(LENS, order="up"), "`order`", "'up'"),
    Case("plan-negative", lambda: sp.plan_per_length([1, -1]), "`lengths`", "-1"),
    Case("plan-drop-int", lambda: sp.plan_per_length(LENS, drop_remainder=1),
         "`drop_remainder`", "1"),
    Case("separate-not-callable", lambda: sp.fit_separate_models(3, XF, np.zeros(4)),
         "`build_model`", "int"),
    Case("separate-unseen", lambda: sp.fit_separate_models(lambda g: _model(), XF, np.zeros(4),
                                                           unseen="skip"),
         "`unseen`", "'skip'"),
    Case("separate-y-nan", lambda: sp.fit_separate_models(
        lambda g: _model(), XF, np.array([np.nan, 0, 0, 0])), "`y`", "y[0]"),
    Case("plan-tbptt-window", lambda: sp.plan_tbptt(LENS, window=0, batch_size=2), "`window`",
         "0"),
    Case("plan-tbptt-batch", lambda: sp.plan_tbptt(LENS, window=2, batch_size=-1),
         "`batch_size`", "-1"),
    Case("plan-tbptt-order", lambda: sp.plan_tbptt(LENS, window=2, batch_size=2, order="x"),
         "`order`", "'x'"),
    Case("tbptt-y-nan", lambda: sp.fit_tbptt(_model(True), XF, np.array([0, np.nan, 0, 0]),
                                             window=4, batch_size=2, verbose=0),
         "`y`", "y[1]"),
    Case("tbptt-x-inf", lambda: sp.fit_tbptt(_model(True), [np.full((3, 2), np.inf)],
                                             np.zeros(1), window=4, batch_size=2, verbose=0),
         "`x`", "inf"),
    Case("tbptt-window-str", lambda: sp.predict_tbptt(_model(True), XF, window="a",
                                                      batch_size=2), "`window`", "'a'"),
    Case("tbptt-return-sequences-str", lambda: sp.fit_tbptt(
        _model(True), XF, np.zeros(4), window=4, batch_size=2, return_sequences="yes"),
         "`return_sequences`", "'yes'"),
    Case("predict-tbptt-return-sequences-none", lambda: sp.predict_tbptt(
        _model(True), XF, window=4, batch_size=2, return_sequences=None),
         "`return_sequences`", "None"),
    # ---------------------------------------------------------------- distributed
    Case("replica-fn-sharded", lambda: sp.replica_dataset_fn(X, sampler=sp.BucketSampler(
        sp.sequence_lengths(X), batch_size=2, num_shards=2)), "`sampler`", "num_shards=2"),
    Case("replica-fn-pad-to", lambda: sp.replica_dataset_fn(
        X, sampler=sp.BucketSampler(sp.sequence_lengths(X), batch_size=2), pad_to="max"),
         "`pad_to`", "'max'"),
    Case("replica-plans-not-samplers", lambda: sp.replica_plans([1, 2]), "`sampler_shards`",
         "int"),
    Case("replica-plans-wrong-shards", lambda: sp.replica_plans([_sampler()] * 2),
         "`sampler_shards`", "[0, 0]"),
    Case("replica-plans-pad-to", lambda: sp.replica_plans([_sampler()], pad_to="batch"),
         "`pad_to`", "'batch'"),
    # ---------------------------------------------------------------- models, ingestion
    Case("rnn-mask-str", lambda: sp.models.reference_rnn(input_dim=2, mask="no"), "`mask`",
         "'no'"),
    Case("rnn-stateful-int", lambda: sp.models.reference_rnn(input_dim=2, stateful=1),
         "`stateful`", "1"),
    Case("rnn-stateful-no-batch", lambda: sp.models.reference_rnn(input_dim=2, stateful=True),
         "`stateful=True`", "batch_size=None"),
    Case("rnn-vocab-one", lambda: sp.models.reference_rnn(vocab_size=1), "`vocab_size`", "1"),
    Case("rnn-dropout", lambda: sp.models.reference_rnn(input_dim=2, dropout=1.5), "`dropout`",
         "1.5"),
    Case("rnn-no-input", lambda: sp.models.reference_rnn(num_classes=2), "`input_dim`",
         "None"),
    Case("rnn-both-inputs", lambda: sp.models.reference_rnn(input_dim=2, vocab_size=5),
         "`vocab_size`", "5"),
    Case("rnn-cell", lambda: sp.models.reference_rnn(input_dim=2, cell="transformer"),
         "`cell`", "'transformer'"),
    Case("rnn-units", lambda: sp.models.reference_rnn(input_dim=2, units=0), "`units`", "0"),
    Case("df-missing-column", lambda: sp.from_dataframe(
        pd.DataFrame({"id": [1], "a": [0.0]}), id="id", features=["b"]), "`features`", "'b'"),
    Case("df-missing-id", lambda: sp.from_dataframe(
        pd.DataFrame({"id": [1], "a": [0.0]}), id="sid", features=["a"]), "`id`", "'sid'"),
    Case("df-not-a-frame", lambda: sp.from_dataframe([1, 2], id="id", features=["a"]), "`df`",
         "list"),
    Case("df-no-features", lambda: sp.from_dataframe(
        pd.DataFrame({"id": [1], "a": [0.0]}), id="id", features=[]), "`features`", "[]"),
    Case("df-missing-target", lambda: sp.from_dataframe(
        pd.DataFrame({"id": [1], "a": [0.0]}), id="id", features=["a"], target="y"),
         "`target`", "'y'"),
    Case("to-df-targets", lambda: sp.to_dataframe([np.ones(2)], targets=[1, 2]), "`targets`",
         "2"),
    Case("report-batches-int", lambda: sp.padding_report(LENS, 5), "`batches`", "5"),
    Case("unpad-1d", lambda: sp.unpad(np.zeros(3), [1]), "`padded`", "(3,)"),
    Case("sampler-tokens-float", lambda: sp.BucketSampler(LENS, max_tokens=1e3),
         "`max_tokens`", "1000.0"),
    Case("plan-group-by-2d", lambda: sp.plan_per_length(LENS, group_by=[[1]]), "`group_by`",
         "[[1]]"),
    Case("read-lengths-missing-file", lambda: sp.read_lengths("no-such-file.csv", column="n"),
         "`path`", "no-such-file.csv", (ValueError, TypeError, FileNotFoundError)),
    # ---------------------------------------------------------------- issue 18: first hour
    Case("dataset-batch-size-not-sampler", lambda: sp.bucketed_dataset(X, None, batch_size=64),
         "`batch_size`", "batch_size=64"),
    Case("dataset-no-sampler", lambda: sp.bucketed_dataset(X), "`sampler`", "no sampler"),
    Case("pydataset-batch-size-not-sampler", lambda: sp.bucketed_pydataset(
        X, None, batch_size=4, seed=3), "`batch_size`", "batch_size=4, seed=3"),
    Case("packed-batch-size-not-sampler", lambda: sp.packed_dataset(X, batch_size=2),
         "`batch_size`", "batch_size=2"),
    Case("lengths-mixed-nesting", lambda: sp.sequence_lengths([[1, 2], [3, [4, 5]]]),
         "`sequences`", "[3, [4, 5]]"),
    Case("lengths-mixed-step-depth", lambda: sp.sequence_lengths([[1, 2], [[3, 4]]]),
         "`sequences`", "(2,)"),
    Case("width-grid-of-lengths", lambda: sp.width_grid([1, 2, 3]), "`sampler`", "[1, 2, 3]"),
    Case("count-shapes-of-lengths", lambda: sp.count_shapes([1, 2]), "`sampler`", "[1, 2]"),
    Case("count-shapes-backend", lambda: sp.count_shapes(_sampler(), backend=3), "`backend`",
         "backend=3"),
    Case("state-version-bucket", lambda: _sampler().load_state_dict(
        {**_sampler().state_dict(), "version": 99}), "`state`", "version=99"),
    Case("state-version-pack", lambda: sp.PackSampler(LENS, batch_size=2).load_state_dict(
        {**sp.PackSampler(LENS, batch_size=2).state_dict(), "version": 99}), "`state`",
         "version=99"),
    Case("report-index-twice", lambda: sp.padding_report([3, 4], [[0, 0]]), "`batches`",
         "index 0"),
    Case("report-index-in-two-batches", lambda: sp.padding_report([3, 4], [[0], [1, 0]]),
         "`batches`", "batches [0, 1]"),
    Case("mask-too-large", lambda: sp.length_mask([10**12]), "`lengths`", "1000000000000"),
    Case("plan-per-length-empty", lambda: sp.plan_per_length([0, 2, 2]), "`lengths`",
         "group_by='length'"),
    Case("report-auto-unknown", lambda: _sampler().report(pad_to="max"), "`pad_to`", "'max'"),
    # ---------------------------------------------------------------- issue 18: non-finite
    Case("predict-tbptt-nan", lambda: sp.predict_tbptt(_model(True), _nan_x(), window=4,
                                                       batch_size=2), "`x`", "nan"),
    Case("evaluate-tbptt-nan", lambda: sp.evaluate_tbptt(_model(True), _nan_x(), np.zeros(4),
                                                         window=4, batch_size=2), "`x`", "nan"),
    Case("evaluate-tbptt-step-target-inf", lambda: sp.evaluate_tbptt(
        _model(True), XF, [np.full((n, 1), np.inf, "float32") for n in LENS], window=4,
        batch_size=2), "`y`", "inf"),
    Case("fit-tbptt-validation-nan", lambda: sp.fit_tbptt(
        _model(True), XF, np.zeros(4), window=4, batch_size=2, verbose=0,
        validation_data=(_nan_x(), np.zeros(4))), "`validation_data[0]`", "nan"),
    Case("df-inf-feature", lambda: sp.from_dataframe(_frame(x=[1.0, np.inf, 2.0]), id="id",
                                                     features="x"), "`features`", "inf"),
    Case("df-inf-target", lambda: sp.from_dataframe(_frame(y=[-np.inf] * 3), id="id",
                                                    features="x", target="y"),
         "`target`", "-inf"),
    Case("df-mixed-time", lambda: sp.from_dataframe(_frame(t=[0, "1", 2]), id="id", time="t",
                                                    features="x"), "`time`", "'1'"),
    Case("read-sequences-inf", lambda: sp.read_sequences(_csv(x=[1.0, np.inf, 2.0]), id="id",
                                                         features="x"), "`features`", "inf"),
]


def _frame(**columns):
    base = {"id": [1, 1, 2], "t": [0, 1, 0], "x": [1.0, 2.0, 3.0], "y": [0.0, 0.0, 1.0]}
    return pd.DataFrame({**base, **columns})


def _csv(**columns):
    import tempfile

    path = f"{tempfile.mkdtemp()}/steps.csv"
    _frame(**columns).to_csv(path, index=False)
    return path


def _sampler_kw(**kw):
    return sp.BucketSampler(LENS, batch_size=2, **kw)


def _check_message(message: str, names: str, received: str) -> None:
    assert names in message, f"does not name {names}: {message}"
    assert received in message, f"does not show {received!r}: {message}"
    assert _FIX.search(message), f"says no fix: {message}"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_message_names_argument_value_and_fix(case):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(case.exc) as err:
            case.call()
    _check_message(str(err.value), case.names, case.received)


# --------------------------------------------------------------------------- command line

LONG = np.array([3, 5, 9, 40, 2, 7])


@pytest.fixture()
def npy(tmp_path):
    path = tmp_path / "lengths.npy"
    np.save(path, LONG)
    csv = tmp_path / "lengths.csv"
    pd.DataFrame({"length": LONG}).to_csv(csv, index=False)
    scores = tmp_path / "scores.csv"
    pd.DataFrame({"length": LONG, "score": LONG * 0.5}).to_csv(scores, index=False)
    return {"npy": str(path), "csv": str(csv), "dir": str(tmp_path), "scores": str(scores)}


CLI_CASES = [
    ("tokens-zero", ["analyze", "{npy}", "--max-tokens", "0"], "--max-tokens", "'0'"),
    ("tokens-text", ["analyze", "{npy}", "--max-tokens", "lots"], "--max-tokens", "'lots'"),
    ("batch-negative", ["analyze", "{npy}", "--batch-size", "-2"], "--batch-size", "'-2'"),
    ("batch-float", ["analyze", "{npy}", "--batch-size", "2.5"], "--batch-size", "'2.5'"),
    ("both-budgets", ["analyze", "{npy}", "--batch-size", "2", "--max-tokens", "9"],
     "--max-tokens", "--batch-size"),
    ("tokens-below-longest", ["analyze", "{npy}", "--max-tokens", "10"], "--max-tokens", "10"),
    ("missing-column", ["analyze", "{csv}", "--column", "nope"], "--column", "'nope'"),
    ("missing-id", ["analyze", "{csv}", "--id", "sid"], "--id", "'sid'"),
    ("missing-file", ["analyze", "no-such-file.npy"], "PATH", "no-such-file.npy"),
    ("folder", ["analyze", "{dir}"], "PATH", "{dir}"),
    ("seed-text", ["analyze", "{npy}", "--seed", "x"], "--seed", "'x'"),
    ("demo-epochs-zero", ["demo", "--epochs", "0"], "--epochs", "'0'"),
    ("demo-verbose", ["demo", "--verbose", "5"], "--verbose", "5"),
    ("unknown-command", ["train"], "COMMAND", "'train'"),
    ("float-column-names-id-flag", ["analyze", "{scores}", "--column", "score"], "`--id`",
     "float64"),
]


@pytest.mark.parametrize(("argv", "flag", "received"), [c[1:] for c in CLI_CASES],
                         ids=[c[0] for c in CLI_CASES])
def test_cli_errors_name_the_flag_value_and_fix(npy, argv, flag, received):
    argv = [a.format(**npy) for a in argv]
    received = received.format(**npy)
    with contextlib.redirect_stderr(io.StringIO()) as err, \
            contextlib.redirect_stdout(io.StringIO()):
        status = cli_main(argv)
    message = err.getvalue()
    assert status == 2, message
    _check_message(message, flag, received)
    # The Python argument names must not leak into the command line's messages.
    assert "`max_tokens`" not in message and "`batch_size`" not in message, message
    assert not re.search(r"(?<![\w-])id=", message), message


# --------------------------------------------------------------------------- nothing dropped
# or poisoned without a word

_COUNT = re.compile(r"(\d+) of (\d+) sequence\(s\)")


def _planned(sampler) -> int:
    return sum(b.size for b in sampler.batches(0))


@settings(max_examples=60, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 40), min_size=1, max_size=60),
    batch_size=st.integers(1, 9),
    shards=st.integers(1, 3),
    max_length=st.none() | st.integers(1, 40),
)
def test_sampler_says_how_many_sequences_it_leaves_out(lengths, batch_size, shards, max_length):
    kwargs = dict(batch_size=batch_size, drop_remainder=True, num_shards=shards,
                  max_length=max_length, overlong="drop", shuffle=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            samplers = [sp.BucketSampler(lengths, shard_index=k, **kwargs)
                        for k in range(shards)]
        except ValueError as err:
            assert "would leave out all" in str(err)
            assert "`drop_remainder`" in str(err) or "`overlong`" in str(err)
            return
    planned = sum(_planned(s) for s in samplers)
    dropped = len(lengths) - planned
    assert planned > 0
    messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    if dropped == 0:
        assert not messages
        return
    assert len(messages) == shards  # one per sampler built
    got = _COUNT.search(messages[0])
    assert (int(got.group(1)), int(got.group(2))) == (dropped, len(lengths))
    over = sum(n > max_length for n in lengths) if max_length is not None else 0
    assert ("(overlong='drop')" in messages[0]) == (over > 0)
    assert "To keep them" in messages[0]


def test_replica_planners_warn_with_counts():
    import tensorflow as tf

    x = [[1] * n for n in (1, 2, 3, 4, 5, 6, 7)]
    sampler = sp.BucketSampler(sp.sequence_lengths(x), batch_size=4, boundaries=[],
                               drop_remainder=True, shuffle=False)
    fn = sp.replica_dataset_fn(x, sampler=sampler)
    ctx = tf.distribute.InputContext(num_input_pipelines=1, input_pipeline_id=0,
                                     num_replicas_in_sync=2)
    with pytest.warns(UserWarning, match=r"3 of 7 sequence\(s\)"):
        ds = fn(ctx)
    assert sum(int(tf.shape(b)[0]) for b in ds) == 4


def test_plan_per_length_counts_what_drop_remainder_leaves_out():
    rng = np.random.default_rng(0)
    lengths = np.clip(rng.lognormal(3.0, 0.6, 400).astype(int), 1, 200)
    with pytest.warns(UserWarning) as caught:
        batches = sp.plan_per_length(lengths, batch_size=8, drop_remainder=True)
    kept = sum(b.size for b in batches)
    got = _COUNT.search(str(caught[0].message))
    assert (int(got.group(1)), int(got.group(2))) == (400 - kept, 400)
    assert kept < 400 and "drop_remainder=False" in str(caught[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sp.plan_per_length(lengths, batch_size=8)  # nothing dropped, nothing said


def test_fit_per_length_warns_when_drop_remainder_leaves_data_out():
    x = [np.ones((n, 2), "float32") for n in (2, 2, 2, 3, 3, 4)]
    with pytest.warns(UserWarning, match=r"2 of 6 sequence\(s\).*drop_remainder=True"):
        history = sp.fit_per_length(_model(), x, np.zeros(6, "float32"), batch_size=2,
                                    options=sp.Options(drop_remainder=True), verbose=0)
    assert history.steps_per_epoch == 2 and len(history.history["loss"]) == 1


@pytest.mark.filterwarnings("ignore:.*have length 0:UserWarning")
@settings(max_examples=40, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 5), min_size=1, max_size=8),
    data=st.data(),
)
def test_first_nonfinite_feature_is_named_by_sequence_and_step(lengths, data):
    if sum(lengths) == 0:
        return
    x = [np.arange(n * 2, dtype="float64").reshape(n, 2) for n in lengths]
    rows = [i for i, n in enumerate(lengths) if n]
    bad = sorted(data.draw(st.sets(st.sampled_from(
        [(i, t, c) for i in rows for t in range(lengths[i]) for c in (0, 1)]),
        min_size=1, max_size=4)))
    for i, t, c in bad:
        x[i][t, c] = data.draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    before = [a.copy() for a in x]
    with pytest.raises(ValueError) as err:
        sp.bucketed_dataset(x, sampler=sp.BucketSampler(lengths, batch_size=2))
    first_row, first_step = bad[0][0], bad[0][1]
    assert f"x[{first_row}] at step {first_step}" in str(err.value)
    assert f"holds {len(bad)} NaN or infinite" in str(err.value)
    for a, b in zip(x, before, strict=True):  # the caller's arrays are untouched
        np.testing.assert_array_equal(a, b)


def test_allow_nonfinite_keeps_the_values():
    x = _nan_x()
    ds = sp.bucketed_dataset(x, sampler=_sampler(),
                             options=sp.Options(allow_nonfinite=True, dtype="float32"))
    got = np.concatenate([b.numpy().reshape(-1, 2) for b in ds])
    assert np.isnan(got).sum() == 1


def test_nan_in_per_step_targets_names_the_sequence():
    y = [np.zeros(n, "float32") for n in LENS]
    y[3][2] = np.nan
    with pytest.raises(ValueError, match=r"`y` holds 1 NaN .* y\[3\]"):
        sp.bucketed_dataset(X, y, sampler=_sampler())
    with pytest.raises(ValueError, match=r"`y` holds 1 NaN .* y\[3\]"):
        sp.fit_per_length(_model(), XF, y, verbose=0)


def test_a_fresh_generator_is_read_and_a_consumed_one_refused():
    gen = (np.ones(n) for n in (1, 2))
    assert sp.pad_sequences(gen).shape == (2, 2)
    with pytest.raises(ValueError, match="already been consumed"):
        sp.pad_sequences(gen)
    with pytest.raises(ValueError, match="already been consumed"):
        sp.sequence_lengths(gen)


def test_float64_values_that_overflow_float32_are_refused_not_turned_into_inf():
    """sample_weight and TBPTT inputs are cast to float32; 1e39 must raise, not become inf."""
    x = [np.ones((3, 2), np.float32), np.ones((4, 2), np.float32)]
    y = np.array([0, 1])
    sampler = sp.BucketSampler([3, 4], batch_size=2)
    with pytest.raises(ValueError, match=r"`sample_weight`.*1e\+39.*sample_weight\[1\]"):
        sp.bucketed_dataset(x, y, sampler=sampler, sample_weight=np.array([1.0, 1e39]))
    with pytest.raises(ValueError, match=r"`sample_weight` must hold finite.*sample_weight\[0\]"):
        sp.bucketed_dataset(x, y, sampler=sampler, sample_weight=np.array([np.nan, 1.0]))

    from seqprep.running import _tbptt_data as tbptt
    big = [np.array([[1.0], [1e39]]), np.array([[2.0]])]
    with pytest.raises(ValueError, match=r"`x` does not fit float32.*1e\+39 at x\[0\]\[1\]"):
        tbptt._prepare_data(big, None, return_sequences=None, need_y=False)
