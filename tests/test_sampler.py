"""BucketSampler: exact plans at the edges, bad input, overlong policies, resume, pickling."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seqprep.planning import BatchPlan, Bucketer, BucketSampler, PlanOptions


def _lognormal(n, seed=0):
    rng = np.random.default_rng(seed)
    return np.clip(np.round(rng.lognormal(3.5, 0.8, n)), 2, 400).astype(np.int64)


def _lists(batches):
    return [b.tolist() for b in batches]


def test_unshuffled_plan_exact():
    # Buckets [0, 5) = {0, 2, 4, 6} and [5, inf) = {1, 3, 5}; unshuffled runs short to long.
    s = BucketSampler([1, 9, 2, 8, 3, 7, 4], boundaries=[5], batch_size=3, shuffle=False)
    plan = s.plan(0)
    assert isinstance(plan, BatchPlan)
    assert _lists(plan.batches) == [[0, 2, 4], [6], [1, 3, 5]]
    assert plan.buckets.tolist() == [0, 0, 1]
    assert plan.num_dropped == 0 and plan.epoch == 0


@pytest.mark.parametrize(
    ("boundaries", "length", "bucket"),
    [([10, 20], 9, 0), ([10, 20], 10, 1), ([10, 20], 19, 1), ([10, 20], 20, 2), ([10], 0, 0)],
)
def test_length_equal_to_boundary_lands_in_upper_bucket(boundaries, length, bucket):
    lengths = [length] * 4
    s = BucketSampler(lengths, boundaries=boundaries, batch_size=4, shuffle=False)
    assert s.batch_buckets(0).tolist() == [bucket]


def test_exact_batches_per_bucket_and_pad_lengths():
    lengths = [2] * 6 + [30] * 4
    s = BucketSampler(lengths, boundaries=[10], batch_size=3, shuffle=False)
    assert _lists(s.batches(0)) == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    assert s.batch_buckets(0).tolist() == [0, 0, 1, 1]
    assert s.plan(0).pad_lengths.tolist() == [2, 2, 30, 30]
    assert s.bucket_pad_lengths.tolist() == [2, 30]


def test_max_tokens_batches_respect_budget_exactly():
    lengths = [10] * 7 + [25] * 3
    s = BucketSampler(lengths, boundaries=[20], max_tokens=50, shuffle=False)
    # 50 // 10 = 5 rows of 10; 50 // 25 = 2 rows of 25. The leftover [5, 6] cannot take a row
    # of 25 (3 x 25 > 50), so the last 25 stands alone.
    assert _lists(s.batches(0)) == [[0, 1, 2, 3, 4], [5, 6], [7, 8], [9]]
    assert s.report()["max_batch_tokens"] == 50


def test_quadratic_cost_term_exact_capacities():
    # max_tokens=1000, quadratic_length=100: a row of length L costs L + L**2 / 100 tokens.
    # L=10 -> 11 tokens -> 90 rows; L=50 -> 75 -> 13 rows; L=100 -> 200 -> 5 rows.
    lengths = [10] * 91 + [50] * 14 + [100] * 6
    s = BucketSampler(lengths, boundaries=[20, 60], max_tokens=1000,
                      options=PlanOptions(quadratic_length=100, merge_leftovers=False),
                      shuffle=False)
    sizes = [len(b) for b in s.batches(0)]
    assert sizes == [90, 1, 13, 1, 5, 1]
    assert s.batch_buckets(0).tolist() == [0, 0, 1, 1, 2, 2]
    # Without the quadratic term the same budget takes 100, 20 and 10 rows.
    linear = BucketSampler(lengths, boundaries=[20, 60], max_tokens=1000, shuffle=False,
                           options=PlanOptions(merge_leftovers=False))
    assert [len(b) for b in linear.batches(0)] == [91, 14, 6]


@pytest.mark.parametrize("q", [1, 2, 7, 64, 1000])
@pytest.mark.parametrize("budget", [1, 5, 99, 100, 4096])
def test_token_length_limit_and_capacity_match_brute_force(q, budget):
    from seqprep.planning._boundaries import batch_capacity, token_length_limit

    assert token_length_limit(budget, q) == max(
        t for t in range(budget + 1) if t * (q + t) <= budget * q
    )
    assert token_length_limit(budget) == budget
    longest = np.arange(1, token_length_limit(budget, q) + 1)
    cap = batch_capacity(longest, None, budget, q)
    for length, rows in zip(longest.tolist(), cap.tolist(), strict=True):
        assert rows * length * (q + length) <= budget * q  # fits
        assert (rows + 1) * length * (q + length) > budget * q  # and one more row would not


def test_quadratic_cost_term_overlong_policies_and_errors():
    lengths = [5, 10, 300]  # max_tokens=1000, q=100 fits one row of at most 270 steps
    with pytest.raises(ValueError, match=r"longer than 270, .*`max_tokens`=1000.*quadratic"):
        BucketSampler(lengths, max_tokens=1000, options=PlanOptions(quadratic_length=100))
    cut = BucketSampler(lengths, max_tokens=1000, options=PlanOptions(quadratic_length=100),
                        overlong="truncate")
    assert cut.length_limit == 270 and cut.num_truncated_ == 1
    dropped = BucketSampler(lengths, max_tokens=1000, options=PlanOptions(quadratic_length=100),
                            overlong="drop")
    assert dropped.num_dropped_ == 1
    with pytest.raises(ValueError, match="`quadratic_length` only changes a `max_tokens`"):
        BucketSampler(lengths, batch_size=2, options=PlanOptions(quadratic_length=100))
    with pytest.raises(ValueError, match="`quadratic_length` must be at least 1"):
        BucketSampler(lengths, max_tokens=1000, options=PlanOptions(quadratic_length=0))
    with pytest.raises(ValueError, match="too large"):
        BucketSampler(lengths, max_tokens=2**40, options=PlanOptions(quadratic_length=2**30))
    with pytest.raises(ValueError, match="`quadratic_length` only changes"):
        Bucketer(quadratic_length=10).fit(lengths)


def test_quadratic_cost_term_shapes_the_plan_and_the_state():
    lengths = _lognormal(3000)
    s = BucketSampler(lengths, max_tokens=4096, options=PlanOptions(quadratic_length=64), seed=3)
    assert "quadratic_length=64" in repr(s)
    # Long batches get fewer rows than under the linear budget, and every batch fits.
    for b in s.batches(0):
        longest = int(s.lengths[b].max())
        assert len(b) * longest * (64 + longest) <= 4096 * 64
    linear = BucketSampler(lengths, max_tokens=4096, seed=3)
    assert len(s) > len(linear)
    # A state saved under one cost model does not load into another.
    with pytest.raises(ValueError, match="fingerprint"):
        linear.load_state_dict(s.state_dict())
    again = pickle.loads(pickle.dumps(s))
    assert _lists(again.batches(2)) == _lists(s.batches(2))
    # The default Bucketer was fitted under the same cost model.
    fitted = Bucketer(target_padding=0.01, max_tokens=4096, quadratic_length=64).fit(lengths)
    np.testing.assert_array_equal(s.boundaries, fitted.boundaries_)


def test_unmerged_leftovers_keep_one_bucket_per_batch():
    lengths = [2] * 4 + [30] * 4
    merged = BucketSampler(lengths, boundaries=[10], batch_size=3, shuffle=False)
    assert _lists(merged.batches(0)) == [[0, 1, 2], [4, 5, 6], [3, 7]]
    assert merged.plan(0).pad_lengths.tolist() == [2, 30, 30]
    alone = BucketSampler(lengths, boundaries=[10], batch_size=3, shuffle=False,
                          options=PlanOptions(merge_leftovers=False))
    assert _lists(alone.batches(0)) == [[0, 1, 2], [3], [4, 5, 6], [7]]
    assert alone.plan(0).pad_lengths.tolist() == [2, 2, 30, 30]
    assert alone.report(pad_to="bucket")["padded_tokens"] == 4 * 2 + 4 * 30
    with pytest.raises(TypeError, match="merge_leftovers"):
        BucketSampler(lengths, batch_size=3, options=PlanOptions(merge_leftovers="no"))
    state = merged.state_dict()
    with pytest.raises(ValueError, match="fingerprint"):
        alone.load_state_dict(state)


def test_batch_size_gives_ceil_n_over_b_batches():
    lengths = _lognormal(1000)
    s = BucketSampler(lengths, batch_size=64)
    assert len(s) == -(-1000 // 64)


def test_drop_remainder_counts_dropped_examples():
    s = BucketSampler(list(range(1, 11)), boundaries=[], batch_size=4, drop_remainder=True)
    assert len(s) == 2
    assert s.num_dropped_ == 2
    assert all(b.size == 4 for b in s.batches(0))


def test_shards_split_a_final_incomplete_group_without_dropping():
    lengths = [5] * 10
    shards = [BucketSampler(lengths, batch_size=4, num_shards=3, shard_index=k) for k in range(3)]
    assert {len(s) for s in shards} == {1}
    seen = sorted(i for s in shards for b in s.batches(0) for i in b.tolist())
    assert seen == list(range(10))
    assert shards[0].num_dropped_ == 0


def test_too_few_examples_for_every_shard_is_a_clear_error():
    with pytest.raises(ValueError, match="Cannot give each of the 4 shards") as err:
        BucketSampler([3, 4], batch_size=2, num_shards=4)
    assert "drop_remainder=True" in str(err.value)
    # Dropping everything is refused too: an empty epoch would train on nothing.
    with pytest.raises(ValueError, match="`drop_remainder` would leave out all 2 sequence"):
        BucketSampler([3, 4], batch_size=2, num_shards=4, drop_remainder=True)


def test_seeded_shuffle_depends_on_seed_and_epoch_only():
    lengths = _lognormal(500)
    a = BucketSampler(lengths, batch_size=16, seed=3)
    b = BucketSampler(lengths, batch_size=16, seed=3)
    assert _lists(a.batches(2)) == _lists(b.batches(2))
    assert _lists(a.batches(1)) != _lists(a.batches(2))
    c = BucketSampler(lengths, batch_size=16, seed=4)
    assert _lists(a.batches(2)) != _lists(c.batches(2))


def test_iteration_advances_epoch_and_set_epoch_restarts():
    s = BucketSampler(_lognormal(100), batch_size=10, seed=1)
    first = _lists(s)
    assert first == _lists(s.batches(0)) and s.epoch == 1
    assert _lists(s) == _lists(s.batches(1))
    s.set_epoch(0)
    assert _lists(s) == first


def test_default_boundaries_come_from_an_optimal_bucketer():
    lengths = _lognormal(2000)
    s = BucketSampler(lengths, batch_size=32)
    b = Bucketer(target_padding=0.01, batch_size=32).fit(lengths)
    assert s.boundaries.tolist() == b.boundaries_.tolist()
    assert BucketSampler(lengths, boundaries=b, batch_size=32).boundaries.tolist() == (
        b.boundaries_.tolist()
    )


@pytest.mark.parametrize(
    ("policy", "n_batched", "truncated", "dropped"),
    [("truncate", 4, 1, 0), ("drop", 3, 0, 1)],
)
def test_overlong_policies_report_counts(policy, n_batched, truncated, dropped):
    s = BucketSampler([3, 50, 4, 5], batch_size=2, overlong=policy, max_length=10)
    assert sum(b.size for b in s.batches(0)) == n_batched
    assert s.num_truncated_ == truncated and s.num_dropped_ == dropped
    if policy == "truncate":
        assert s.lengths.tolist() == [3, 10, 4, 5] and s.length_limit == 10
        assert s.report()["num_truncated"] == 1


def test_inputs_not_mutated_and_lengths_read_only():
    lengths = np.array([5, 50, 2, 9])
    before = lengths.copy()
    s = BucketSampler(lengths, batch_size=2, overlong="truncate", max_length=10)
    np.testing.assert_array_equal(lengths, before)
    with pytest.raises(ValueError):
        s.lengths[0] = 1
    with pytest.raises(ValueError):
        s.batches(0)[0][0] = 1


@pytest.mark.parametrize(
    ("lengths", "kwargs", "error", "match"),
    [
        ([], {"batch_size": 2}, ValueError, "`lengths` must not be empty"),
        ([1, -3], {"batch_size": 2}, ValueError, "`lengths` must hold non-negative"),
        ([1, 2], {}, ValueError, "exactly one of `batch_size` and `max_tokens`"),
        ([1, 2], {"batch_size": 2, "max_tokens": 9}, ValueError, "exactly one of `batch_size`"),
        ([1, 2], {"batch_size": 0}, ValueError, "`batch_size` must be at least 1"),
        ([1, 20], {"max_tokens": 10}, ValueError, "longer than `max_tokens`=10"),
        ([1, 20], {"batch_size": 2, "max_length": 5}, ValueError, "longer than `max_length`=5"),
        (
            [1, 2],
            {"batch_size": 2, "num_shards": 2, "shard_index": 2},
            ValueError,
            "`shard_index` must be less than `num_shards`",
        ),
        ([1, 2], {"batch_size": 2, "shard_index": -1}, ValueError, "`shard_index` must be at"),
        ([1, 2], {"batch_size": 2, "seed": -1}, ValueError, "`seed` must be at least 0"),
        ([1, 2], {"batch_size": 2, "overlong": "cut"}, ValueError, "`overlong` must be"),
        ([1, 2], {"batch_size": 2, "shuffle": "yes"}, TypeError, "`shuffle` must be True"),
        ([1, 2], {"batch_size": 2, "boundaries": [4, 2]}, ValueError, "`boundaries`"),
        ([1, 2], {"batch_size": 2, "boundaries": Bucketer()}, ValueError, "not fitted"),
    ],
)
def test_bad_input(lengths, kwargs, error, match):
    with pytest.raises(error, match=match):
        BucketSampler(lengths, **kwargs)


def test_state_from_another_seed_or_shard_count_is_a_clear_error():
    lengths = _lognormal(200)
    state = BucketSampler(lengths, batch_size=8, seed=1).state_dict()
    with pytest.raises(ValueError, match="seed=1"):
        BucketSampler(lengths, batch_size=8, seed=2).load_state_dict(state)
    with pytest.raises(ValueError, match="num_shards=1"):
        BucketSampler(lengths, batch_size=8, seed=1, num_shards=2).load_state_dict(state)
    with pytest.raises(ValueError, match="fingerprint"):
        BucketSampler(lengths, batch_size=9, seed=1).load_state_dict(state)
    with pytest.raises(ValueError, match="`state` must be a dict"):
        BucketSampler(lengths, batch_size=8, seed=1).load_state_dict({"seed": 1})


def test_resume_mid_epoch_yields_exactly_the_rest():
    lengths = _lognormal(300)
    s = BucketSampler(lengths, batch_size=8, seed=5, num_shards=2, shard_index=1)
    s.set_epoch(4)
    it = iter(s)
    head = [next(it).tolist() for _ in range(7)]
    state = s.state_dict()
    assert state["epoch"] == 4 and state["position"] == 7
    t = BucketSampler(lengths, batch_size=8, seed=5, num_shards=2, shard_index=1)
    t.load_state_dict(state)
    assert head + _lists(t) == _lists(s.batches(4))


def test_pickle_round_trip_keeps_plan_and_position():
    s = BucketSampler(_lognormal(300), max_tokens=2000, seed=2)
    it = iter(s)
    next(it)
    t = pickle.loads(pickle.dumps(s))
    assert t.state_dict() == s.state_dict()
    assert _lists(t.batches(7)) == _lists(s.batches(7))


def test_repr_reports_padding_shapes_and_steps():
    text = repr(BucketSampler(_lognormal(256), batch_size=32))
    for part in (
        "BucketSampler(n=256",
        "batches per epoch",
        "padding",
        "batch shapes",
        "padded tokens",
        "RNN steps",
    ):
        assert part in text


def test_default_padding_close_to_sorted_batching():
    lengths = _lognormal(8192)
    order = np.argsort(lengths, kind="stable")
    from seqprep.planning import padding_report

    floor = padding_report(lengths, [order[i : i + 64] for i in range(0, 8192, 64)])
    got = BucketSampler(lengths, batch_size=64).report()
    assert got["padding_fraction"] <= floor["padding_fraction"] + 0.02
    assert got["n_batches"] == 128


# --------------------------------------------------------------------------- independent iterators


def test_each_iterator_keeps_its_own_position():
    s = BucketSampler(_lognormal(200), batch_size=8, seed=4)
    epoch0 = _lists(s.batches(0))
    a, b = iter(s), iter(s)
    first_a = [next(a).tolist() for _ in range(3)]
    first_b = [next(b).tolist() for _ in range(5)]
    assert first_a == epoch0[:3] and first_b == epoch0[:5]
    assert _lists(a) == epoch0[3:]
    # `a` finished the epoch: the sampler moved on, and `b` still holds the rest of epoch 0.
    assert s.epoch == 1
    assert _lists(b) == epoch0[5:]


def test_peek_costs_a_later_iterator_nothing():
    s = BucketSampler(_lognormal(100), batch_size=8, seed=6)
    peek = next(iter(s))
    assert peek.tolist() == s.batches(0)[0].tolist()
    assert _lists(s) == _lists(s.batches(0))
    assert _lists(s) == _lists(s.batches(1))


def test_an_epoch_whose_last_batch_was_handed_out_is_played():
    # Keras stops a DataLoader epoch after len(loader) batches, without asking for one more.
    s = BucketSampler(_lognormal(100), batch_size=8, seed=6)
    it = iter(s)
    epoch0 = [next(it).tolist() for _ in range(len(s))]
    assert epoch0 == _lists(s.batches(0))
    assert _lists(s) == _lists(s.batches(1))
    t = BucketSampler(_lognormal(100), batch_size=8, seed=6)
    t.load_state_dict({**s.state_dict(), "epoch": 3, "position": len(s)})
    assert _lists(t) == []  # the rest of epoch 3, as a saved iterator would play it
    assert _lists(t) == _lists(s.batches(4))


def test_state_dict_records_the_iterator_that_yielded_last():
    s = BucketSampler(_lognormal(100), batch_size=8, seed=6)
    a = iter(s)
    next(a)
    next(a)
    assert (s.state_dict()["epoch"], s.state_dict()["position"]) == (0, 2)
    b = iter(s)
    next(b)
    assert s.state_dict()["position"] == 1
    t = BucketSampler(_lognormal(100), batch_size=8, seed=6)
    t.load_state_dict(s.state_dict())
    assert _lists(t) == _lists(b)
    s.set_epoch(5)  # moved under `a`: `a` keeps its epoch but no longer moves the state
    rest_a = _lists(a)
    assert rest_a == _lists(s.batches(0))[2:]
    assert (s.state_dict()["epoch"], s.state_dict()["position"]) == (5, 0)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 60),
    batch_size=st.integers(1, 9),
    steps=st.lists(st.integers(0, 3), max_size=40),
)
def test_interleaved_iterators_each_play_the_whole_rest_of_their_epoch(n, batch_size, steps):
    # A random interleaving of next() over up to four iterators, made at random moments.
    s = BucketSampler(_lognormal(n, seed=n), batch_size=batch_size, seed=2)
    its, got, starts, born = [], [], [], []
    for k in steps:
        if k >= len(its):
            its.append(iter(s))
            starts.append((s._epoch, s._position))  # where the new iterator starts
            born.append(s._generation)  # it moves the sampler while no other was made since
            got.append([])
            continue
        b = next(its[k], None)
        if b is not None:
            got[k].append(b.tolist())
            if born[k] == s._generation:  # state_dict follows the iterator that yielded last
                assert s.state_dict()["position"] == starts[k][1] + len(got[k])
    for k, it in enumerate(its):
        got[k].extend(b.tolist() for b in it)
        epoch, position = starts[k]
        assert got[k] == _lists(s.batches(epoch))[position:]
    # Iterators made one after another with nothing in between start at the same point; an
    # iterator that handed out its epoch's last batch moved later ones to the next epoch.
    assert all(e2 >= e1 for (e1, _), (e2, _) in zip(starts, starts[1:], strict=False))
    assert all(p < len(s) for _, p in starts)  # never an iterator with nothing left to play
