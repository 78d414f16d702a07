"""tf.distribute and tf.data service: replicas in step, every example exactly once.

The strategy runs (MirroredStrategy over 2 logical CPUs, MultiWorkerMirroredStrategy over 2
worker processes) happen in subprocesses (``tests/_mwms_worker.py``): logical devices and
``TF_CONFIG`` must be set before TensorFlow initialises, which the pytest process shares with
other tests. The three subprocesses start together once per module, on loopback ports picked
free, and are killed on timeout or failure.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import seqprep as sp
from seqprep.planning._replicas import replica_plans
from seqprep.running._distributed import (
    local_data_service,
    replica_dataset_fn,
    service_bucketed_dataset,
)

WORKER = Path(__file__).with_name("_mwms_worker.py")
TIMEOUT = 240  # seconds for each subprocess; generous for a loaded 2-core machine
N = 61  # as in _mwms_worker.make_data


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="-1", KERAS_BACKEND="tensorflow")
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def _collect(procs: dict[str, subprocess.Popen]) -> dict[str, dict]:
    results: dict[str, dict] = {}
    try:
        for name, proc in procs.items():
            try:
                out, _ = proc.communicate(timeout=TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, _ = proc.communicate()
                results[name] = {"error": f"timed out after {TIMEOUT}s\n{out[-3000:]}"}
                continue
            lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
            if proc.returncode != 0 or not lines:
                results[name] = {"error": f"exit code {proc.returncode}\n{out[-3000:]}"}
            else:
                results[name] = json.loads(lines[-1][len("RESULT "):])
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    return results


@pytest.fixture(scope="module")
def strategy_runs() -> dict[str, dict]:
    """Start the MirroredStrategy run and both MultiWorkerMirroredStrategy workers at once."""
    ports = [_free_port(), _free_port()]
    cluster = {"worker": [f"localhost:{p}" for p in ports]}
    procs: dict[str, subprocess.Popen] = {}
    try:
        procs["mirrored"] = subprocess.Popen(
            [sys.executable, str(WORKER), "mirrored"], env=_env(),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for i in range(2):
            config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})
            procs[f"worker{i}"] = subprocess.Popen(
                [sys.executable, str(WORKER), "worker"], env=_env(TF_CONFIG=config),
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            )
    except BaseException:
        for proc in procs.values():
            proc.kill()
            proc.communicate()
        raise
    return _collect(procs)


def _check_ok(result: dict) -> None:
    if "error" in result:
        pytest.fail(result["error"])


def _ids(steps: list[dict]) -> list[int]:
    return [i for step in steps for i in step["ids"]]


# --------------------------------------------------------------------------- plans (numpy)


@pytest.mark.parametrize("num_shards", [2, 3, 4])
@pytest.mark.parametrize("budget", [{"batch_size": 3}, {"max_tokens": 120}])
@pytest.mark.parametrize("pad_to", ["step", "bucket"])
def test_replica_plans_are_aligned_and_cover_every_example_once(num_shards, budget, pad_to):
    rng = np.random.default_rng(num_shards)
    lengths = rng.integers(1, 30, size=97)
    shards = [
        sp.BucketSampler(lengths, boundaries=[5, 10, 20], num_shards=num_shards, shard_index=k,
                         seed=3, **budget)
        for k in range(num_shards)
    ]
    plans = replica_plans(shards, epoch=2, pad_to=pad_to)
    steps = {len(p.batches) for p in plans}
    assert len(steps) == 1
    for p in plans[1:]:
        np.testing.assert_array_equal(p.buckets, plans[0].buckets)
        np.testing.assert_array_equal(p.pad_lengths, plans[0].pad_lengths)
    seen = np.concatenate([b for p in plans for b in p.batches])
    assert sorted(seen.tolist()) == list(range(lengths.size))
    widths = plans[0].pad_lengths
    longest = np.array([[lengths[b].max() for b in p.batches] for p in plans])
    assert (longest <= widths).all()
    if pad_to == "step":
        np.testing.assert_array_equal(longest.max(axis=0), widths)
    sizes = np.array([[b.size for b in p.batches] for p in plans])
    assert (sizes[:, 0] == sizes[0, 0]).all(), "the first step must have equal batch sizes"
    if "max_tokens" in budget:
        assert (sizes * widths <= budget["max_tokens"]).all()


def test_replica_plans_refuses_mismatched_shards():
    lengths = [1, 2, 3, 4]
    a = sp.BucketSampler(lengths, batch_size=1, num_shards=2, shard_index=0)
    with pytest.raises(ValueError, match="shards 0..n-1"):
        replica_plans([a, a])
    with pytest.raises(ValueError, match="pad_to"):
        replica_plans([a], pad_to="batch")


# --------------------------------------------------------------------------- dataset_fn


def _pipelines(fn, num_pipelines: int, num_replicas: int) -> list[list]:
    out = []
    for p in range(num_pipelines):
        ctx = tf.distribute.InputContext(
            num_input_pipelines=num_pipelines, input_pipeline_id=p,
            num_replicas_in_sync=num_replicas,
        )
        out.append([(x.numpy(), y.numpy()) for x, y in fn(ctx)])
    return out


def test_dataset_fn_splits_global_batch_and_interleaves_local_replicas():
    rng = np.random.default_rng(0)
    n = 83
    lengths = rng.integers(1, 20, size=n)
    x = [np.full(t, i + 1, np.int32) for i, t in enumerate(lengths)]
    ids = np.arange(n)
    sampler = sp.BucketSampler(lengths, batch_size=8, boundaries=[4, 8, 14], seed=5)
    fn = replica_dataset_fn(x, ids, sampler=sampler)
    # 2 workers with 2 local replicas each: 4 replicas, 2 batches per step per pipeline.
    pipelines = _pipelines(fn, num_pipelines=2, num_replicas=4)
    assert len({len(p) for p in pipelines}) == 1 and len(pipelines[0]) % 2 == 0
    replicas = [p[j::2] for p in pipelines for j in range(2)]
    steps = len(replicas[0])
    for s in range(steps):
        widths = {r[s][0].shape[1] for r in replicas}
        assert len(widths) == 1, f"step {s}: replicas padded to different lengths {widths}"
        for xb, yb in (r[s] for r in replicas):
            assert 1 <= xb.shape[0] <= 2  # global 8 over 4 replicas
            np.testing.assert_array_equal(xb[:, 0], yb + 1)  # rows are the labelled sequences
    seen = Counter(int(i) for r in replicas for _, yb in r for i in yb)
    assert seen == Counter(range(n))


def test_dataset_fn_with_one_replica_per_pipeline_is_the_plain_shard():
    lengths = [3, 1, 2, 8, 9, 7, 4, 4]
    x = [np.arange(t) for t in lengths]
    fn = replica_dataset_fn(x, np.arange(8), pad_to="bucket",
                            sampler=sp.BucketSampler(lengths, batch_size=4, boundaries=[5], seed=1))
    (got,) = _pipelines(fn, num_pipelines=1, num_replicas=1)
    sampler = sp.BucketSampler(lengths, boundaries=[5], batch_size=4, seed=1)
    expected = [b.tolist() for b in sampler.batches(0)]
    assert [yb.tolist() for _, yb in got] == expected


def test_dataset_fn_plays_a_new_aligned_epoch_on_every_pass():
    rng = np.random.default_rng(2)
    n = 61
    lengths = rng.integers(1, 20, size=n)
    x = [np.full(t, i + 1, np.int32) for i, t in enumerate(lengths)]
    sampler = sp.BucketSampler(lengths, batch_size=8, boundaries=[5, 10], seed=3)
    fn = replica_dataset_fn(x, np.arange(n), sampler=sampler)
    ctx = tf.distribute.InputContext(num_input_pipelines=1, input_pipeline_id=0,
                                     num_replicas_in_sync=2)
    ds = fn(ctx)  # the default: no reshuffle argument
    passes = [[yb.numpy().tolist() for _, yb in ds] for _ in range(3)]
    for p in passes:
        assert Counter(i for b in p for i in b) == Counter(range(n))
        assert len(p) == int(ds.cardinality())
    assert passes[0] != passes[1] and passes[1] != passes[2] and passes[0] != passes[2]
    # Each pass is the next epoch of the shards: replica k's batches are shard k's plan.
    for e, p in enumerate(passes):
        shards = [sp.BucketSampler(lengths, boundaries=[5, 10], batch_size=4, seed=3,
                                   num_shards=2, shard_index=k) for k in range(2)]
        for k in range(2):
            assert [sorted(b) for b in p[k::2]] == [sorted(b.tolist())
                                                   for b in shards[k].batches(e)]
    fixed = replica_dataset_fn(
        x, np.arange(n), sampler=sampler,
        options=sp.Options(reshuffle_each_iteration=False))(ctx)
    assert [yb.numpy().tolist() for _, yb in fixed] == [yb.numpy().tolist() for _, yb in fixed]


def test_dataset_fn_passes_the_sampler_options_to_every_shard():
    rng = np.random.default_rng(1)
    n = 90
    lengths = rng.integers(1, 30, size=n)
    x = [np.full(t, i + 1, np.int32) for i, t in enumerate(lengths)]
    bounds = [6, 12, 20]

    def shard_batches(k, **kwargs):
        s = sp.BucketSampler(lengths, boundaries=bounds, num_shards=2, shard_index=k, seed=3,
                             **kwargs)
        return sorted(sorted(b.tolist()) for b in s.batches(0))

    def global_sampler(**kwargs):
        return sp.BucketSampler(lengths, boundaries=bounds, seed=3, **kwargs)

    def got_batches(fn):
        # One replica per input pipeline: pipeline k plays shard k of the sampler.
        return [sorted(sorted(yb.tolist()) for _, yb in p)
                for p in _pipelines(fn, num_pipelines=2, num_replicas=2)]

    for merge in (True, False):
        options = sp.PlanOptions(merge_leftovers=merge)
        fn = replica_dataset_fn(x, np.arange(n), pad_to="bucket",
                                sampler=global_sampler(batch_size=8, options=options))
        assert got_batches(fn) == [shard_batches(k, batch_size=4, options=options)
                                   for k in range(2)]
    # The option reaches the shards: on these lengths it changes the plan.
    assert shard_batches(0, batch_size=4) != shard_batches(
        0, batch_size=4, options=sp.PlanOptions(merge_leftovers=False))
    # quadratic_length holds each replica's batch to its share of the budget, exactly.
    quadratic = sp.PlanOptions(quadratic_length=10)
    fn = replica_dataset_fn(x, np.arange(n), pad_to="bucket",
                            sampler=global_sampler(max_tokens=400, options=quadratic))
    replicas = _pipelines(fn, num_pipelines=2, num_replicas=2)
    for r in replicas:
        for xb, _ in r:
            rows, width = xb.shape
            assert rows * width * (10 + width) <= 200 * 10  # 400 tokens over 2 replicas
    assert [sorted(sorted(yb.tolist()) for _, yb in r) for r in replicas] == [
        shard_batches(k, max_tokens=200, options=quadratic) for k in range(2)]
    assert Counter(int(i) for r in replicas for _, yb in r for i in yb) == Counter(range(n))


def test_dataset_fn_errors_name_the_argument():
    x = [[1], [2, 2], [3]]
    lengths = sp.sequence_lengths(x)
    with pytest.raises(TypeError, match="Pass sampler=seqprep.BucketSampler"):
        replica_dataset_fn(x)
    with pytest.raises(TypeError, match=r"takes no `batch_size`.*batch_size=3"):
        replica_dataset_fn(x, batch_size=3)
    fn = replica_dataset_fn(x, sampler=sp.BucketSampler(lengths, batch_size=3))
    ctx = tf.distribute.InputContext(num_input_pipelines=1, input_pipeline_id=0,
                                     num_replicas_in_sync=2)
    with pytest.raises(ValueError, match="divisible by the number of replicas"):
        fn(ctx)
    with pytest.raises(ValueError, match="pad_to"):
        replica_dataset_fn(x, sampler=sp.BucketSampler(lengths, batch_size=2), pad_to="batch")
    shard = sp.BucketSampler([1, 2, 3, 4], batch_size=1, num_shards=2, shard_index=1)
    with pytest.raises(ValueError, match=r"global plan \(num_shards=1\).*num_shards=2"):
        replica_dataset_fn(x, sampler=shard)
    with pytest.raises(TypeError, match="must be a seqprep.BucketSampler"):
        replica_dataset_fn(x, sampler=sp.PackSampler(lengths, batch_size=2))
    with pytest.raises(ValueError, match="`replica_dataset_fn` does not use"):
        replica_dataset_fn(x, sampler=sp.BucketSampler(lengths, batch_size=2),
                           options=sp.Options(data_parallel=2))


# --------------------------------------------------------------------------- strategies


def test_mirrored_strategy_two_devices_trains_one_epoch_exactly_once(strategy_runs):
    result = strategy_runs["mirrored"]
    _check_ok(result)
    assert result["num_replicas"] == 2

    route1 = result["route1"]
    a, b = route1["replicas"]
    assert len(a) == len(b) > 0, "both replicas must run the same number of steps"
    assert [s["width"] for s in a] == [s["width"] for s in b], "same padded length per step"
    assert Counter(_ids(a) + _ids(b)) == Counter(range(N))
    # Steps, not a pipeline's batches (steps x local replicas): Keras runs no empty step past
    # the data, which would advance optimizer.iterations.
    assert route1["cardinality"] == route1["iterations"] == len(a)
    assert np.isfinite(route1["loss"]).all()

    # Plain bucketed_dataset: Keras splits each global batch between the replicas.
    route2 = result["route2"]
    a, b = route2["replicas"]
    assert len(a) == len(b) == route2["num_batches"]
    assert route2["fit_distributed_steps"] == [route2["num_batches"]]  # not half of them
    assert [s["width"] for s in a] == [s["width"] for s in b]
    assert Counter(_ids(a) + _ids(b)) == Counter(range(route2["n"]))
    assert np.isfinite(route2["loss"]).all()


def test_count_steps_sets_tensorflows_private_cardinality_loudly():
    """_keras_private.count_steps divides the private ``_cardinality`` that
    ``DistributedDatasetsFromFunction.cardinality`` returns (Keras's fit reads it as the step
    count); if TensorFlow renames it, this fails, and count_steps raises rather than leaving
    Keras to run past the data. counts_pipeline_batches reads TensorFlow's class names."""
    from seqprep.running import _keras_private as kp

    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    dd = strategy.distribute_datasets_from_function(
        lambda ctx: tf.data.Dataset.range(6).batch(1))
    assert type(dd).__name__ == "DistributedDatasetsFromFunction" and dd._cardinality == 6
    assert kp.count_steps(dd, 2) is dd
    assert int(dd.cardinality) == 3 and isinstance(dd.cardinality, np.int64)
    assert [int(b[0]) for b in dd] == list(range(6))  # the data is untouched
    # TensorFlow's class names tell a pipeline's count from experimental_distribute_dataset's
    # steps (each global batch split between the replicas).
    assert kp.counts_pipeline_batches(dd)
    assert not kp.counts_pipeline_batches(
        strategy.experimental_distribute_dataset(tf.data.Dataset.range(6).batch(2)))
    with pytest.raises(ValueError, match="whole number of steps"):
        kp.count_steps(dd, 2)  # 3 is not a whole number of 2-batch steps
    infinite = strategy.distribute_datasets_from_function(
        lambda ctx: tf.data.Dataset.range(2).batch(1).repeat())
    assert kp.count_steps(infinite, 2).cardinality == tf.data.INFINITE_CARDINALITY

    class Renamed:  # a TensorFlow without `_cardinality`
        cardinality = np.int64(4)

    with pytest.raises(RuntimeError, match=r"`_cardinality`.*_keras_private\.py needs updating"):
        kp.count_steps(Renamed(), 2)

    class Ignored(Renamed):  # `cardinality` no longer reads `_cardinality`
        _cardinality = np.int64(4)

    with pytest.raises(RuntimeError, match="no longer reads `_cardinality`"):
        kp.count_steps(Ignored(), 2)


def test_multi_worker_mirrored_two_processes_equal_steps(strategy_runs):
    runs = [strategy_runs["worker0"], strategy_runs["worker1"]]
    for run in runs:
        _check_ok(run)
        assert run["num_replicas"] == 2
    steps = [run["steps"][0] for run in runs]
    recorded = [run["replicas"][0] for run in runs]
    assert steps[0] == steps[1] == len(recorded[0]) == len(recorded[1]) > 0
    assert [s["width"] for s in recorded[0]] == [s["width"] for s in recorded[1]]
    assert Counter(_ids(recorded[0]) + _ids(recorded[1])) == Counter(range(N))
    # Gradients are all-reduced, so both workers end with the same weights.
    assert runs[0]["weights"] == pytest.approx(runs[1]["weights"], rel=1e-5, abs=1e-6)
    assert np.isfinite(runs[0]["loss"]).all()


# --------------------------------------------------------------------------- tf.data service


def _service_data(n: int = 57):
    rng = np.random.default_rng(7)
    lengths = rng.integers(1, 16, size=n)
    x = [np.full(t, i, np.int64) for i, t in enumerate(lengths)]
    sampler = sp.BucketSampler(lengths, boundaries=[4, 8], batch_size=5, seed=2)
    return x, np.arange(n), sampler


def _served_ids(ds) -> Counter:
    return Counter(int(i) for _, yb in ds for i in yb.numpy())


def test_data_service_distributed_epoch_two_workers_exactly_once():
    x, ids, sampler = _service_data()
    with local_data_service(num_workers=2) as service:
        assert service.target.startswith("grpc://localhost:")
        ds = service_bucketed_dataset(service, x, ids, sampler=sampler)
        batches = [(xb.numpy(), yb.numpy()) for xb, yb in ds]
    assert len(batches) == len(sampler)
    assert Counter(int(i) for _, yb in batches for i in yb) == Counter(range(len(x)))
    for xb, yb in batches:  # each batch arrives whole, padded to its own longest
        assert (xb[:, 0] == yb).all()


def test_data_service_static_data_sharding_exactly_once():
    x, ids, sampler = _service_data()
    policy = tf.data.experimental.service.ShardingPolicy.DATA
    with local_data_service(num_workers=2, static_sharding=True) as service:
        ds = service_bucketed_dataset(service, x, ids, sampler=sampler, processing_mode=policy)
        assert _served_ids(ds) == Counter(range(len(x)))


def test_data_service_parallel_epochs_duplicates_per_worker():
    """Documented: with ShardingPolicy.OFF each worker plays the whole epoch."""
    x, ids, sampler = _service_data()
    with local_data_service(num_workers=2) as service:
        ds = service_bucketed_dataset(service, x, ids, sampler=sampler,
                                      processing_mode="parallel_epochs")
        seen = _served_ids(ds)
    assert seen == Counter({i: 2 for i in range(len(x))})


def test_data_service_refuses_python_epoch_state():
    x, ids, sampler = _service_data()
    with pytest.raises(ValueError, match="sets `epochs`, which the tf.data service does not"):
        service_bucketed_dataset("grpc://localhost:1", x, ids, sampler=sampler,
                                 options=sp.Options(epochs=2))


def _served_batches(ds) -> list[frozenset]:
    return [frozenset(int(i) for i in yb.numpy()) for _, yb in ds]


def _planned_batches(sampler, epoch: int) -> set[frozenset]:
    return {frozenset(int(i) for i in b) for b in sampler.plan(epoch).batches}


@pytest.mark.parametrize("mode", ["distributed_epoch", "static_data"])
def test_data_service_new_epoch_each_pass_exactly_once(mode):
    """Issue 11: pass p plays sampler epoch epoch + p % distinct_epochs, each id once."""
    x, ids, sampler = _service_data()
    static = mode == "static_data"
    policy = tf.data.experimental.service.ShardingPolicy.DATA if static else mode
    with local_data_service(num_workers=2, static_sharding=static) as service:
        ds = service_bucketed_dataset(service, x, ids, sampler=sampler, processing_mode=policy,
                                      epoch=1, distinct_epochs=2)
        passes = [_served_batches(ds) for _ in range(3)]
    for p, batches in enumerate(passes):
        assert Counter(i for b in batches for i in b) == Counter(range(len(x)))
        assert len(batches) == len(sampler)
        assert set(batches) == _planned_batches(sampler, 1 + p % 2)
    assert set(passes[0]) != set(passes[1])  # two different orders (seed-fixed plans)
    assert set(passes[0]) == set(passes[2])  # the cycle of distinct_epochs=2 repeats


def test_data_service_opt_out_replays_one_epoch():
    x, ids, sampler = _service_data()
    with local_data_service(num_workers=2) as service:
        ds = service_bucketed_dataset(service, x, ids, sampler=sampler, epoch=3,
                                      options=sp.Options(reshuffle_each_iteration=False))
        passes = [set(_served_batches(ds)) for _ in range(2)]
    assert passes[0] == passes[1] == _planned_batches(sampler, 3)


def test_data_service_named_job_replays_one_epoch():
    """Documented: a named job is fixed when built, so every pass replays `epoch`."""
    x, ids, sampler = _service_data()
    with local_data_service(num_workers=2) as service:
        ds = service_bucketed_dataset(service, x, ids, sampler=sampler, job_name="shared",
                                      epoch=2)
        first = _served_batches(ds)
    assert Counter(i for b in first for i in b) == Counter(range(len(x)))
    assert set(first) == _planned_batches(sampler, 2)


def test_data_service_checks_distinct_epochs():
    x, ids, sampler = _service_data()
    with pytest.raises(ValueError, match="`distinct_epochs`"):
        service_bucketed_dataset("grpc://localhost:1", x, ids, sampler=sampler,
                                 distinct_epochs=0)


def test_data_service_exactly_once_modes_know_their_length():
    x, ids, sampler = _service_data()
    with local_data_service(num_workers=2) as service:
        ds = service_bucketed_dataset(service, x, ids, sampler=sampler, distinct_epochs=2)
        fixed = service_bucketed_dataset(service, x, ids, sampler=sampler,
                                         options=sp.Options(reshuffle_each_iteration=False))
        dup = service_bucketed_dataset(service, x, ids, sampler=sampler,
                                       processing_mode="parallel_epochs")
        assert int(ds.cardinality()) == int(fixed.cardinality()) == len(sampler)
        assert int(dup.cardinality()) == tf.data.UNKNOWN_CARDINALITY


def test_data_service_fit_epochs_play_consecutive_passes():
    """model.fit(ds, epochs=3) plays passes 0, 1, 2: the next pass plays epoch 3."""
    import keras

    x, ids, sampler = _service_data()
    model = keras.Sequential([
        keras.Input((None,), dtype="int64"), keras.layers.Embedding(len(x), 2),
        keras.layers.GlobalAveragePooling1D(), keras.layers.Dense(len(x)),
    ])
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    with local_data_service(num_workers=2) as service:
        ds = service_bucketed_dataset(service, x, ids, sampler=sampler, distinct_epochs=4)
        history = model.fit(ds, epochs=3, verbose=0)
        after = set(_served_batches(ds))
    assert len(history.history["loss"]) == 3
    assert after == _planned_batches(sampler, 3)


def test_replica_dataset_fn_reads_targets_by_the_one_rule():
    """Ambiguous targets (every sequence and every label row of one length) need `targets=`."""
    import tensorflow as tf

    x = [np.ones((3, 2), np.float32) for _ in range(4)]
    y = [[0, 1, 0], [1, 0, 0], [0, 0, 1], [1, 1, 0]]  # one-hot labels or per-step targets?
    context = tf.distribute.InputContext()
    sampler = sp.BucketSampler(sp.sequence_lengths(x), batch_size=2, boundaries=[2])
    with pytest.raises(ValueError, match="targets="):
        replica_dataset_fn(x, y, sampler=sampler)(context)
    # Either explicit reading is accepted and passed through to every replica's batches.
    for targets in ("sequence", "step"):
        ds = replica_dataset_fn(x, y, sampler=sampler, targets=targets)(context)
        rows = np.concatenate([yb.numpy() for _, yb in ds])
        assert sorted(map(tuple, rows.tolist())) == sorted(map(tuple, y))
