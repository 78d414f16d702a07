"""Every planner works with TensorFlow and Keras absent (issue 12 acceptance).

The planners are pure numpy; this runs each of them in a fresh interpreter in which importing
``tensorflow`` or ``keras`` raises ``ImportError`` (as on a machine without them), checks that
each result (a ``BatchPlan``, ``PackedPlan`` or TBPTT plan, from ``seqprep/planning/_plan.py``
and ``seqprep/planning/_windows.py``) covers its sequences, and checks that neither package was ever
imported.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Runs in the child. A meta-path finder ahead of all others refuses the blocked packages, so a
# stray `import tensorflow` anywhere under seqprep fails loudly instead of importing it.
_BLOCK = """
import sys

BLOCKED = ("tensorflow", "keras", "tf_keras")


class _Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is blocked in this test")
        return None


sys.meta_path.insert(0, _Blocker())
"""

_PLANNERS = """
import os
import tempfile

import numpy as np

import seqprep as sp


def covered(batches):
    return sorted(int(i) for b in batches for i in np.asarray(b).ravel())


lengths = np.random.default_rng(0).integers(1, 40, size=97)
n = len(lengths)
everyone = list(range(n))

bucketer = sp.Bucketer(4, batch_size=8).fit(lengths)
assert len(bucketer.boundaries_) >= 1

s = sp.BucketSampler(lengths, boundaries=bucketer, batch_size=8, seed=1)
assert covered(s.batches(0)) == everyone
t = sp.BucketSampler(lengths, max_tokens=160, seed=1)
assert covered(t.batches(3)) == everyone
pairs = {"src": lengths, "tgt": lengths[::-1].copy()}  # 2-D buckets (planned jointly)
two = sp.BucketSampler(pairs, max_tokens=160, seed=1)
assert covered(two.batches(2)) == everyone and two.plan(2).field_pad_lengths.shape[1] == 2
assert sp.padding_report(pairs, two.batches(2))["fields"]["tgt"]["n_examples"] == n

assert isinstance(s.plan(0), sp.BatchPlan) and s.plan(0).widths("batch", s.lengths).size == len(s)
assert covered(s.plan(0).rows[None]) == everyone
per_length = sp.plan_per_length(lengths, batch_size=5, seed=2)
assert isinstance(per_length, sp.BatchPlan) and covered(per_length) == everyone
by_bucket = sp.plan_per_length(lengths, batch_size=5, group_by=sp.Bucketer(3, batch_size=5))
assert covered(by_bucket) == everyone

plan = sp.plan_tbptt(lengths, window=8, batch_size=4)
assert sorted(set(plan.sequence[plan.sequence >= 0].tolist())) == everyone
assert int(plan.count.sum()) == int(lengths.sum())
assert covered(plan.batches) == everyone and plan.num_dropped == 0

shards = [sp.BucketSampler(lengths, boundaries=[10, 20], batch_size=8, num_shards=2,
                           shard_index=k, seed=3) for k in range(2)]
plans = sp.replica_plans(shards, epoch=1)
assert covered([b for p in plans for b in p.batches]) == everyone
assert len(plans[0].batches) == len(plans[1].batches)

packer = sp.PackSampler(lengths, row_length=64, batch_size=3, seed=4)
assert covered([row for batch in packer.batches(0) for row in batch]) == everyone
packed = packer.plan(0)
assert isinstance(packed, sp.PackedPlan) and covered(packed) == everyone

# The one protocol: every planner object, read through it alone.
planners = [s, t, two, packer, sp.PerLengthPlanner(lengths, batch_size=5, seed=2),
            sp.TBPTTPlanner(lengths, window=8, batch_size=4),
            sp.TBPTTPlanner(lengths, window=8, batch_size=4, order="shuffle", dense=True),
            sp.ReplicaPlanner(shards, 1)]
for planner in planners:
    assert isinstance(planner, sp.Planner), planner
    planner.set_epoch(2)
    state = planner.state_dict()
    assert len(list(planner)) == len(planner.plan(2).batches)
    planner.load_state_dict(state)  # back to the start of epoch 2
    assert planner.epoch == 2 and len(list(planner)) == len(planner)
assert covered(packed.slots[packed.slots >= 0][None]) == everyone

from seqprep.planning._fill import fill_batches  # noqa: E402  (the data-parallel fill rule)

plan0 = s.plan(0)
filled = fill_batches(plan0.rows, plan0.splits, multiple_of=4, fill_index=n)
assert covered([filled.rows[filled.rows < n]]) == everyone and (filled.sizes % 4 == 0).all()

report = sp.padding_report(lengths, s.batches(0))
assert report["n_examples"] == n and 0 <= report["padding_fraction"] < 1

seqs = [np.arange(k) + 1 for k in lengths[:5]]
padded = sp.pad_sequences(seqs, padding="post")
mask = sp.length_mask(sp.sequence_lengths(seqs), padding="post")
assert padded.shape == mask.shape and int(mask.sum()) == int(lengths[:5].sum())
assert sp.sequence_weights(lengths[:5]).shape == mask.shape
assert [u.tolist() for u in sp.unpad(padded, lengths[:5])] == [q.tolist() for q in seqs]

import pandas as pd

path = os.path.join(tempfile.mkdtemp(), "seqs.parquet")
pd.DataFrame({"id": [5, 5, 2, 2, 2], "x": [1.0, 2.0, 3.0, 4.0, 5.0]}).to_parquet(path)
chunks = list(sp.iter_parquet_sequences(path, id="id", features="x", rows_per_read=2))
assert [c.lengths.tolist() for c in chunks] == [[2], [3]]

try:
    import tensorflow  # noqa: F401
except ImportError:
    pass
else:
    raise SystemExit("the blocker let tensorflow through")

loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
assert not loaded, loaded
print("PLANNERS-OK")
"""


def _run(code: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=300,
    )


def test_every_planner_runs_with_tensorflow_and_keras_blocked():
    done = _run(textwrap.dedent(_BLOCK) + textwrap.dedent(_PLANNERS))
    assert done.returncode == 0, done.stderr[-4000:]
    assert done.stdout.strip().endswith("PLANNERS-OK"), done.stdout


def test_the_blocker_catches_a_module_that_imports_tensorflow():
    # Control: the same blocker makes a TF module fail, so the test above can fail.
    done = _run(textwrap.dedent(_BLOCK) + "import seqprep as sp\nsp.bucketed_dataset\n")
    assert done.returncode != 0
    assert "is blocked in this test" in done.stderr
