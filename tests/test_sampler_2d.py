"""2-D buckets (issue 20): exact plans, per-field widths and reports, the joint boundary
planner's quality, bad input, and ``seqprep analyze`` on two length columns.

The randomized contract (exactly once, determinism, shards, resume, budgets) is in
``test_sampler_2d_randomized.py``; the shared plan contract in ``test_plan_contract.py``.
"""

from __future__ import annotations

import pickle
import re

import numpy as np
import pandas as pd
import pytest

from seqprep import BatchPlan, BucketSampler, PlanOptions, padding_report
from seqprep._core.checks import check_field_lengths, check_sampler_fields
from seqprep.planning._grid import cover_label, fit_grid, merge_leftovers, snake_rank
from seqprep.tools.analyze import analyze_lengths, format_analysis
from seqprep.tools.cli import main

PAIRS = {"src": [3, 12, 4, 11, 3, 12], "tgt": [4, 14, 5, 3, 5, 15]}


def _padding(lengths: np.ndarray, batches) -> float:
    """Padding of all fields together, each field of a batch padded to its own longest."""
    real = sum(int(lengths[b].sum()) for b in batches)
    padded = sum(len(b) * int(lengths[b].max(axis=0).sum()) for b in batches)
    return 1 - real / padded


def _chunks(order, size):
    return [order[i : i + size] for i in range(0, len(order), size)]


def _pairs(n: int, correlated: bool, seed: int = 0) -> np.ndarray:
    """Word-like lengths and a target of its own length: phoneme counts track letters closely
    (correlation ~0.88) or loosely (~0.2)."""
    rng = np.random.default_rng(seed)
    src = np.clip(np.round(rng.lognormal(np.log(8), 0.35, n)), 1, 24).astype(np.int64)
    if correlated:
        tgt = np.clip(np.round(0.85 * src + rng.normal(0, 1.35, n)), 1, None)
    else:
        tgt = np.clip(np.round(rng.lognormal(np.log(8), 0.35, n)), 1, None)
        tgt = np.where(rng.random(n) < 0.2, src, tgt)
    return np.stack([src, tgt.astype(np.int64)], axis=1)


# --------------------------------------------------------------------------- exact plans


def test_plan_of_a_small_grid_exactly():
    s = BucketSampler(PAIRS, boundaries={"src": [8], "tgt": [10]}, batch_size=2, shuffle=False)
    assert s.grid_shape == (2, 2) and s.num_buckets == 4 and s.num_fields == 2
    assert s.field_names == ("src", "tgt")
    assert [b.tolist() for b in s.boundaries] == [[8], [10]]
    plan = s.plan(0)
    # Cell (0, 0) holds 0, 2, 4: one full batch and a leftover, merged with cell (1, 0)'s
    # example 3 into a batch labelled with their cover (1, 0) = cell 2.
    assert [b.tolist() for b in plan] == [[0, 2], [4, 3], [1, 5]]
    assert plan.buckets.tolist() == [0, 2, 3]
    assert plan.field_pad_lengths.tolist() == [[4, 5], [11, 5], [12, 15]]
    assert plan.pad_lengths.tolist() == [5, 11, 15]
    # bucket_pad_lengths: per cell, the longest of each field there or in any cell below.
    assert s.bucket_pad_lengths.tolist() == [[4, 5], [4, 5], [11, 5], [12, 15]]


def test_array_tuple_and_dict_lengths_plan_alike_and_the_inputs_stay():
    arr = np.array([PAIRS["src"], PAIRS["tgt"]]).T.copy()
    before = arr.copy()
    a = BucketSampler(arr, batch_size=2, seed=3)
    b = BucketSampler(PAIRS, batch_size=2, seed=3)
    c = BucketSampler((np.array(PAIRS["src"]), PAIRS["tgt"]), batch_size=2, seed=3)
    assert a.plan(4) == b.plan(4) == c.plan(4) and c.field_names == (0, 1)
    assert BucketSampler((3, 4, 5), batch_size=2).num_fields == 1  # a tuple of lengths
    assert a.field_names == (0, 1) and np.array_equal(arr, before)
    assert not a.lengths.flags.writeable
    assert b.field_lengths("tgt").tolist() == PAIRS["tgt"]
    with pytest.raises(ValueError, match=r"`field` must be one of the sampler's fields"):
        b.field_lengths("target")


def test_merge_leftovers_labels_with_the_cover_and_respects_capacity():
    # A 2 x 2 grid: leftovers of cells 0, 1 and 3, merged along the snake 0 -> 1 -> 3 -> 2.
    counts, capacity = np.array([3, 1, 0, 2]), np.array([2, 2, 2, 1])
    begin, size, label = merge_leftovers(counts, capacity, (2, 2), merge=True)
    # Cell 0 leaves 1, cell 1 joins it (cover of 0 and 1 is 1; capacity 2: full), cell 3's
    # capacity 1 divides its count: no leftover.
    assert (begin, size, label) == ([0], [2], [1])
    assert merge_leftovers(counts, capacity, (2, 2), merge=False) == ([0, 1], [1, 1], [0, 1])
    assert cover_label(np.array([1, 2]), (2, 2)) == 3
    assert cover_label(np.array([1, 4]), (5,)) == 4
    assert snake_rank((3, 2)).reshape(3, 2).tolist() == [[0, 1], [3, 2], [4, 5]]


@pytest.mark.parametrize(
    ("pad_to", "expected"),
    [("batch", [[4, 5], [11, 5], [12, 15]]), ("bucket", [[4, 5], [11, 5], [12, 15]]),
     (20, [[20, 20]] * 3), ([4, 8, 16], [[4, 8], [16, 8], [16, 16]])],
)
def test_field_widths_per_pad_to(pad_to, expected):
    s = BucketSampler(PAIRS, boundaries=[[8], [10]], batch_size=2, shuffle=False)
    assert s.plan(0).field_widths(pad_to, s.lengths).tolist() == expected


def test_field_widths_needs_every_fields_lengths_and_one_field_plans_give_a_column():
    s = BucketSampler(PAIRS, boundaries=[[8], [10]], batch_size=2, shuffle=False)
    with pytest.raises(ValueError, match=r"\(n, 2\) array of every field's lengths"):
        s.plan(0).field_widths("batch", s.field_lengths("src"))
    with pytest.raises(ValueError, match="pad_to"):
        s.plan(0).field_widths("widest")
    one = BucketSampler([3, 9, 4], boundaries=[5], batch_size=2, shuffle=False).plan(0)
    assert one.num_fields == 1 and one.field_pad_lengths is None
    assert one.field_widths("batch", [3, 9, 4]).tolist() == [[4], [9]]


def test_plans_with_field_widths_compare_and_pickle_and_old_pickles_load():
    plan = BatchPlan(0, [[0], [1, 2]], buckets=[0, 1], pad_lengths=[5, 9],
                     field_pad_lengths=[[5, 2], [3, 9]])
    again = pickle.loads(pickle.dumps(plan))
    assert again == plan and not again.field_pad_lengths.flags.writeable
    assert plan != BatchPlan(0, [[0], [1, 2]], buckets=[0, 1], pad_lengths=[5, 9])
    old = plan.__getstate__()
    del old["field_pad_lengths"]  # a plan pickled before fields existed
    restored = BatchPlan.__new__(BatchPlan)
    restored.__setstate__(old)
    assert restored.field_pad_lengths is None and restored.num_fields == 1
    with pytest.raises(ValueError, match="`pad_lengths` must cover every field"):
        BatchPlan(0, [[0]], buckets=[0], pad_lengths=[4], field_pad_lengths=[[5, 2]])
    with pytest.raises(ValueError, match="one row per batch"):
        BatchPlan(0, [[0]], buckets=[0], pad_lengths=[4], field_pad_lengths=[[1, 2], [3, 4]])


def test_one_field_samplers_pickled_before_fields_existed_still_load():
    s = BucketSampler([5, 1, 2, 6, 2, 7, 1], boundaries=[4], batch_size=2, seed=2)
    state = s.__getstate__()
    for name in ("field_names", "field_tokens", "field_weights"):
        del state[name]
    old = BucketSampler.__new__(BucketSampler)
    old.__setstate__(state)
    assert old.plan(3) == s.plan(3) and old.num_fields == 1


def test_a_state_of_other_fields_is_refused():
    s = BucketSampler(PAIRS, batch_size=2)
    flipped = BucketSampler({"src": PAIRS["tgt"], "tgt": PAIRS["src"]}, batch_size=2)
    with pytest.raises(ValueError, match="other lengths or planning options"):
        flipped.load_state_dict(s.state_dict())
    by_max = BucketSampler(PAIRS, max_tokens=60, options=PlanOptions(field_tokens="max"),
                           boundaries=[[8], [10]])
    by_sum = BucketSampler(PAIRS, max_tokens=60, boundaries=[[8], [10]])
    with pytest.raises(ValueError, match="other lengths or planning options"):
        by_max.load_state_dict(by_sum.state_dict())


# --------------------------------------------------------------------------- budgets, limits


def test_token_budget_counts_the_sum_or_the_max_of_the_fields():
    lengths = np.array([[10, 10]] * 12)
    assert BucketSampler(lengths, max_tokens=80).plan(0).sizes.tolist() == [4, 4, 4]
    by_max = BucketSampler(lengths, max_tokens=80, options=PlanOptions(field_tokens="max")).plan(0)
    assert sorted(by_max.sizes.tolist()) == [4, 8]
    quadratic = BucketSampler(lengths, max_tokens=80,
                              options=PlanOptions(quadratic_length=20)).plan(0)
    assert set(quadratic.sizes.tolist()) == {2}  # a row of 20 costs 20 + 400/20 = 40


def test_max_length_per_field_truncates_or_drops_or_refuses():
    lengths = {"src": [3, 30, 5, 7], "tgt": [4, 6, 40, 7]}
    s = BucketSampler(lengths, batch_size=2, max_length={"src": 20, "tgt": 25},
                      overlong="truncate")
    assert s.lengths.tolist() == [[3, 4], [20, 6], [5, 25], [7, 7]]
    assert s.num_truncated_ == 2 and s.length_limit.tolist() == [20, 25]
    with pytest.warns(UserWarning, match="2 of 4"):
        dropped = BucketSampler(lengths, batch_size=2, max_length=[20, 25], overlong="drop")
    assert sorted(dropped.plan(0).rows.tolist()) == [0, 3] and dropped.num_dropped_ == 2
    with pytest.raises(ValueError, match=r"2 example\(s\) do not fit `max_length`=\(20, 25\)"):
        BucketSampler(lengths, batch_size=2, max_length=[20, 25])


def test_a_row_over_a_sum_budget_cannot_be_truncated():
    with pytest.raises(ValueError, match="cannot be cut without choosing which field"):
        BucketSampler([[30, 30], [2, 2]], max_tokens=40, overlong="truncate")
    s = BucketSampler([[30, 50], [2, 2]], max_tokens=40, options=PlanOptions(field_tokens="max"),
                      overlong="truncate")
    assert s.lengths.tolist() == [[30, 40], [2, 2]]  # a budget on the max caps each field


# --------------------------------------------------------------------------- the planner


def test_joint_planner_gives_each_kind_of_pair_its_own_cell():
    pairs = np.array([[2, 3], [2, 4], [9, 10], [9, 11], [3, 3], [10, 12]] * 8)
    s = BucketSampler(pairs, batch_size=8, seed=1)
    assert s.report()["padding_fraction"] == 0.0
    for bounds in fit_grid(pairs, batch_size=8):
        assert bounds.dtype == np.int64 and np.all(np.diff(bounds) > 0)


@pytest.mark.parametrize("correlated", [True, False])
def test_2d_buckets_beat_1d_buckets_and_match_the_sorted_orders(correlated):
    """The issue's targets, on synthetic word/phoneme-like pairs (batch 64): within 0.02 of
    the better sorted order on correlated pairs, at most half of 1-D bucketing on either
    field; on weakly correlated pairs below both sorted orders."""
    lengths = _pairs(6000, correlated)
    s = BucketSampler({"src": lengths[:, 0], "tgt": lengths[:, 1]}, batch_size=64)
    two_d = _padding(lengths, s.batches(0))
    assert two_d == pytest.approx(s.report()["padding_fraction"])
    one_d = [_padding(lengths, BucketSampler(lengths[:, f], batch_size=64).batches(0))
             for f in range(2)]
    sorted_ = [_padding(lengths, _chunks(np.lexsort(lengths.T[::-1] if f == 0 else lengths.T),
                                         64)) for f in range(2)]
    assert two_d <= 0.5 * min(one_d)
    if correlated:
        assert two_d <= min(sorted_) + 0.02
    else:
        assert two_d < min(sorted_)
    assert len(s) == -(-6000 // 64)  # fewest batches: leftovers merged


def test_field_weights_trade_padding_between_the_fields():
    lengths = _pairs(3000, correlated=False, seed=4)
    pads = {}
    for name, weights in (("src", [8.0, 1.0]), ("tgt", [1.0, 8.0])):
        report = BucketSampler(lengths, batch_size=32,
                               options=PlanOptions(field_weights=weights)).report()
        pads[name] = {f: report["fields"][f]["padding_fraction"] for f in (0, 1)}
    assert pads["src"][0] < pads["tgt"][0] and pads["tgt"][1] < pads["src"][1]


# --------------------------------------------------------------------------- reports


def test_padding_report_per_field_and_in_total():
    r = padding_report({"src": [1, 2, 3, 4], "tgt": [2, 2, 5, 1]}, [[0, 1], [2, 3]])
    assert r["fields"]["src"]["padded_tokens"] == 12 and r["fields"]["tgt"]["padded_tokens"] == 14
    assert (r["padded_tokens"], r["real_tokens"], r["steps_cost"]) == (26, 20, 13)
    assert r["padding_fraction"] == pytest.approx(1 - 20 / 26)
    assert (r["n_shapes"], r["max_batch_tokens"]) == (2, 18)
    text = str(r)
    assert "all fields" in text and re.search(r"padding of tgt +28\.6% \(4 of 14", text)
    padded = padding_report(np.array([[1, 2], [2, 2]]), [[0, 1]], pad_lengths=[[4, 2]])
    assert padded["padded_tokens"] == 12 and padded["fields"][1]["padding_fraction"] == 0
    with pytest.raises(ValueError, match=r"one row per batch and one column per field \(1, 2\)"):
        padding_report(np.array([[1, 2], [2, 2]]), [[0, 1]], pad_lengths=[4])
    with pytest.raises(ValueError, match=r"batch 0 \(field 1\)"):
        padding_report(np.array([[1, 2], [2, 2]]), [[0, 1]], pad_lengths=[[4, 1]])


def test_sampler_report_and_repr_of_two_fields():
    s = BucketSampler(PAIRS, boundaries=[[8], [10]], batch_size=2, shuffle=False)
    by_batch, by_bucket = s.report(), s.report(pad_to="bucket")
    assert by_batch["padded_tokens"] == 2 * 9 + 2 * 16 + 2 * 27
    assert by_bucket["padded_tokens"] == by_batch["padded_tokens"]  # exact cells here
    assert set(by_batch["fields"]) == {"src", "tgt"} and by_batch["num_buckets"] == 4
    assert "BucketSampler(n=6, 4 buckets" in repr(s)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("lengths", "message"),
    [
        (np.ones((4, 1), int), r"at least 2 fields. Received an array of shape \(4, 1\)"),
        (np.ones((2, 2, 2), int), "must be a 1-D sequence"),
        (np.array([[1, 2], [3, -1]]), r"`lengths\[:, 1\]` must hold non-negative"),
        ({"src": [1, 2, 3], "tgt": [1, 2]}, r"fields of different counts.*'src': 3, 'tgt': 2"),
        ({}, "is an empty dict"),
        ({"src": [1, 2], "tgt": [1.5, 2.0]}, r"`lengths\['tgt'\]` must hold integers"),
        (np.ones((2, 40), int), r"(?s)more columns \(fields\) than rows.*pass lengths.T"),
        (([1, 2, 3], [1, 2]), r"fields of different counts.*0: 3, 1: 2"),
    ],
)
def test_bad_field_lengths_name_the_argument(lengths, message):
    error = TypeError if "integers" in message else ValueError
    with pytest.raises(error, match=message):
        BucketSampler(lengths, batch_size=2)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"boundaries": [8, 10]}, r"one list per field|its own boundaries: a list of 2 lists"),
        ({"boundaries": {"src": [8]}}, r"one entry per field \['src', 'tgt'\]"),
        ({"boundaries": [[8], [0]]}, r"boundaries\['tgt'\]"),
        ({"field_weights": [1.0, 0.0]}, r"field_weights\['tgt'\]=0.0"),
        ({"field_weights": [1.0]}, r"`field_weights` must have one entry per field"),
        ({"max_length": [5, 5, 5]}, r"`max_length` must have one entry per field"),
        ({"max_length": {"src": 5}}, r"`max_length` as a dict must have one entry per field"),
        ({"field_tokens": "mean"}, r"`field_tokens` must be 'sum' or 'max'"),
        ({"field_tokens": "max"}, r"`field_tokens` only changes how a `max_tokens` budget"),
    ],
)
def test_bad_options_of_several_fields(kwargs, message):
    knobs = {k: v for k, v in kwargs.items() if k in ("field_weights", "field_tokens")}
    rest = {k: v for k, v in kwargs.items() if k not in knobs}
    with pytest.raises(ValueError, match=message):
        BucketSampler(PAIRS, batch_size=2, options=PlanOptions(**knobs), **rest)


def test_field_options_on_one_field_are_refused():
    with pytest.raises(ValueError, match="apply to several lengths per example"):
        BucketSampler([1, 2, 3], batch_size=2, options=PlanOptions(field_tokens="max"))
    with pytest.raises(ValueError, match="apply to several lengths per example"):
        BucketSampler([1, 2, 3], batch_size=2, options=PlanOptions(field_weights=[1.0]))


def test_check_sampler_fields_refuses_a_sampler_of_other_fields():
    one, two = BucketSampler([3, 4], batch_size=2), BucketSampler(PAIRS, batch_size=2)
    check_sampler_fields(one, 1)
    check_sampler_fields(two, 2)
    with pytest.raises(ValueError, match=r"built on one length per example, but the data has "
                                         r"2 ragged fields \(\['a', 'b'\]\)"):
        check_sampler_fields(one, 2, fields=["a", "b"])
    with pytest.raises(ValueError, match=r"built on 2 fields \(\['src', 'tgt'\]\), but the data "
                                         r"has 1 ragged field"):
        check_sampler_fields(two, 1)
    assert check_field_lengths({"only": [1, 2]})[1] == ("only",)


# --------------------------------------------------------------------------- analyze, CLI


def test_analyze_two_fields_numbers():
    lengths = _pairs(800, correlated=True, seed=2)
    result = analyze_lengths({"src": lengths[:, 0], "tgt": lengths[:, 1]}, batch_size=16)
    strategies = result["strategies"]
    assert list(strategies) == ["pad to max", "random batches", "1-D buckets on src",
                                "1-D buckets on tgt", "sorted by src, tgt",
                                "seqprep 2-D buckets"]
    top = lengths.max(axis=0).sum()
    assert strategies["pad to max"]["padding_fraction"] == pytest.approx(
        1 - lengths.sum() / (800 * top))
    sampler = BucketSampler({"src": lengths[:, 0], "tgt": lengths[:, 1]}, batch_size=16)
    assert strategies["seqprep 2-D buckets"]["padding_fraction"] == pytest.approx(
        sampler.report()["padding_fraction"])
    assert result["recommended_boundaries"] == [b.tolist() for b in sampler.boundaries]
    text = format_analysis(result)
    assert text.startswith("800 examples of 2 fields; batching with batch_size=16")
    assert "Recommended: seqprep.BucketSampler({name: lengths, ...}, batch_size=16)" in text
    budget = analyze_lengths(lengths, max_tokens=200)
    for r in budget["strategies"].values():
        assert r["max_batch_tokens"] <= 200
    with pytest.raises(ValueError, match="smaller than the longest example"):
        analyze_lengths(lengths, max_tokens=10)


@pytest.mark.parametrize("columns", [["--column", "src", "--column", "tgt"],
                                     ["--column", "src,tgt"]])
def test_cli_analyze_two_columns(columns, tmp_path, capsys):
    lengths = _pairs(300, correlated=True, seed=5)
    path = tmp_path / "pairs.csv"
    pd.DataFrame({"src": lengths[:, 0], "tgt": lengths[:, 1]}).to_csv(path, index=False)
    status = main(["analyze", str(path), *columns, "--batch-size", "8", "--out", str(tmp_path)])
    printed = capsys.readouterr().out
    assert status == 0
    assert "300 examples of 2 fields" in printed and "seqprep 2-D buckets" in printed
    assert main(["analyze", str(path), *columns, "--num-buckets", "3"]) == 2
    assert "`--num-buckets` sets one field's bucket count" in capsys.readouterr().err


def test_the_2d_section_of_the_bucketing_docs_runs(capsys):
    """The code blocks of docs/bucketing.md's 2-D section run as written, in order."""
    from pathlib import Path

    text = (Path(__file__).parents[1] / "docs" / "bucketing.md").read_text()
    section = text.split("## 2-D buckets: encoder–decoder pairs")[1].split("\n## ")[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.DOTALL)
    assert len(blocks) == 3
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "docs/bucketing.md", "exec"), namespace)
    assert "padding report" in capsys.readouterr().out


def test_check_sampler_compares_every_fields_lengths():
    from seqprep._core.checks import check_sampler

    s = BucketSampler(PAIRS, batch_size=2, max_length=[11, 20], overlong="truncate")
    data = np.array([PAIRS["src"], PAIRS["tgt"]]).T
    np.testing.assert_array_equal(check_sampler(s, data, BucketSampler), s.lengths)
    other = data.copy()
    other[4, 1] = 9
    with pytest.raises(ValueError, match=r"1 differ, the first at position 4 \(sampler: \[3, 5\]"
                                         r", x: \[3, 9\]\)"):
        check_sampler(s, other, BucketSampler)
    with pytest.raises(ValueError, match="built on 2 fields"):
        check_sampler(s, data[:, 0], BucketSampler)
    with pytest.raises(ValueError, match="built on one length per example"):
        check_sampler(BucketSampler(PAIRS["src"], batch_size=2), data, BucketSampler)


def test_shapes_and_width_grids_of_several_fields():
    from seqprep.planning import count_shapes, width_grid

    s = BucketSampler(PAIRS, boundaries=[[8], [10]], batch_size=2, shuffle=False)
    assert count_shapes(s, pad_to="bucket") == 3  # (2, 4, 5), (2, 11, 5), (2, 12, 15)
    assert count_shapes(s, pad_to=16) == 1
    assert width_grid(s, 1, field="tgt").tolist() == [15]
    assert width_grid(s, 3, field="src").tolist() == [4, 11, 12]
    with pytest.raises(ValueError, match=r"`field` must name one of the sampler's fields"):
        width_grid(s)
    with pytest.raises(ValueError, match=r"`field` must name one of the sampler's fields"):
        width_grid(BucketSampler([1, 2], batch_size=1), field="src")


@pytest.mark.parametrize("pad_to", ["step", "bucket"])
def test_replica_plans_align_every_field_per_step(pad_to):
    from seqprep import replica_plans

    lengths = _pairs(200, correlated=True, seed=7)
    shards = [BucketSampler(lengths, batch_size=8, num_shards=3, shard_index=k, seed=1)
              for k in range(3)]
    plans = replica_plans(shards, epoch=2, pad_to=pad_to)
    seen = np.concatenate([p.rows for p in plans])
    assert np.array_equal(np.sort(seen), np.arange(200))
    first = plans[0].field_pad_lengths
    for p in plans:
        np.testing.assert_array_equal(p.field_pad_lengths, first)  # the same widths per step
        np.testing.assert_array_equal(p.pad_lengths, first.max(axis=1))
        widths = p.field_widths("batch", lengths)
        assert np.all(widths <= first)
    if pad_to == "step":  # the least padding that keeps the replicas in step
        tops = np.max([p.field_widths("batch", lengths) for p in plans], axis=0)
        np.testing.assert_array_equal(tops, first)
