"""One rank of the two-process PyTorch DDP test (tests/test_torch_loader.py).

Run as ``python _torch_ddp_worker.py PORT RANK WORLD OUT``: joins a gloo process group on
127.0.0.1:PORT, loads its shard of a :class:`seqprep.BucketSampler`'s plan through a
``DataLoader(batch_sampler=..., collate_fn=seqprep.PadCollate())``, trains a small
``nn.GRU`` wrapped in ``DistributedDataParallel`` for a few epochs (``set_epoch`` each one),
and writes to OUT the ids of every item it loaded per epoch (in order), its step count per
epoch, and its final weights.
"""

import datetime
import json
import sys

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

import seqprep as sp

EPOCHS = 3
N = 53  # not a multiple of the world size times the batch size: uneven shards without care


class Recorded(Dataset):
    """Items ``(x, y)``; remembers which index each fetch asked for (workers=0: this process)."""

    def __init__(self, x, y):
        self.x, self.y, self.seen = x, y, []

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        self.seen.append(int(i))
        return self.x[i], self.y[i]


class LastStep(nn.Module):
    """A GRU over post-padded batches, read at each sequence's last real step."""

    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(1, 4, batch_first=True)
        self.out = nn.Linear(4, 1)

    def forward(self, xb, lengths):
        packed = nn.utils.rnn.pack_padded_sequence(xb, lengths, batch_first=True,
                                                   enforce_sorted=False)
        _, h = self.gru(packed)
        return self.out(h[-1])[:, 0]


def main(port, rank, world, out):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world, timeout=datetime.timedelta(seconds=60))
    rng = np.random.default_rng(0)  # the same data on every rank
    lengths = rng.integers(1, 15, N)
    x = [rng.normal(size=(int(k), 1)).astype(np.float32) for k in lengths]
    y = rng.normal(size=N).astype(np.float32)
    data = Recorded(x, y)
    sampler = sp.BucketSampler(lengths, boundaries=[5, 10], batch_size=4, seed=3,
                               **sp.shard_by_rank())
    loader = DataLoader(data, batch_sampler=sampler, collate_fn=sp.PadCollate())
    torch.manual_seed(0)  # DDP also broadcasts rank 0's initial weights
    model = DistributedDataParallel(LastStep())
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    ids, steps = [], []
    for epoch in range(EPOCHS):
        sampler.set_epoch(epoch)  # DistributedSampler's convention
        data.seen = []
        count = 0
        for xb, yb in loader:
            real = (xb != 0).any(dim=-1).sum(dim=1)  # x is never exactly 0: no padding mixup
            opt.zero_grad()
            loss = nn.functional.mse_loss(model(xb, real), yb)
            loss.backward()  # all-reduces the gradients: a rank with a step too many hangs
            opt.step()
            count += 1
        ids.append(list(data.seen))
        steps.append(count)
    weights = [p.detach().numpy().tolist() for p in model.module.parameters()]
    dist.destroy_process_group()
    with open(out, "w") as f:
        json.dump({"ids": ids, "steps": steps, "weights": weights,
                   "num_shards": sampler.num_shards, "shard_index": sampler.shard_index}, f)


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
