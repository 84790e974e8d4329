"""GradReducer: bucketed all-reduce started from gradient hooks gives the means the old flat all-reduce gave."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from codeformer.train.runtime import DistInfo, GradReducer


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Net(nn.Module):
    """Two used layers and one, registered last like CodeFormer's fusion blocks, that gets no gradient (as a
    stage-3 code-only step leaves the fusion blocks without one)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Linear(8 * 4 * 4, 16)
        self.unused = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(self.a(x)).flatten(1))


def _flat_mean(grads: list[torch.Tensor], world: int) -> list[torch.Tensor]:
    """The previous implementation: one flat all-reduce after backward."""
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world
    out, offset = [], 0
    for g in grads:
        out.append(flat[offset:offset + g.numel()].view_as(g).clone())
        offset += g.numel()
    return out


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        net = Net()
        params = list(net.parameters())
        x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(100 + rank))  # differs per rank
        net(x).square().mean().backward()
        local = [p.grad.clone() for p in params if p.grad is not None]
        flat = _flat_mean(local, world)
        net.zero_grad(set_to_none=True)
        # 100-byte buckets, in reverse order: [unused, b.bias], [b.weight], [a]; the unused layer comes first and
        # must not hold the others back
        reducer = GradReducer(params, DistInfo(rank, world, rank), bucket_mb=100 / 2**20)
        assert [len(b) for b in reducer.buckets] == [3, 1, 2]
        loss = net(x).square().mean()
        reducer.start(loss)
        loss.backward()
        launched_during_backward = len(reducer._launched)
        reducer.finish()
        bucketed = [p.grad.clone() for p in params if p.grad is not None]
        unused_none = net.unused.weight.grad is None and net.unused.bias.grad is None
        net.zero_grad(set_to_none=True)
        # a bucket whose parameters the loss does not reach at all is skipped (no collective on any rank)
        only_a = GradReducer(list(net.a.parameters()) + list(net.unused.parameters()), DistInfo(rank, world, rank),
                             bucket_mb=1e-9)
        loss = net.a(x).square().mean()
        only_a.start(loss)
        loss.backward()
        skipped_unused = [len(only_a.buckets), len(only_a._launched)]
        only_a.finish()
        net.zero_grad(set_to_none=True)
        net(x).square().mean().backward()  # not armed: the hooks leave local gradients alone
        unarmed_local = all(torch.equal(p.grad, g) for p, g in zip([p for p in params if p.grad is not None], local,
                                                                   strict=True))
        torch.save({"local": local, "flat": flat, "bucketed": bucketed, "unused_none": unused_none,
                    "launched_during_backward": launched_during_backward, "unarmed_local": unarmed_local,
                    "skipped_unused": skipped_unused},
                   Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_bucketed_reduce_equals_the_flat_all_reduce(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert any(not torch.equal(a, b) for a, b in zip(r0["local"], r1["local"], strict=True))  # ranks differed
    for r in (r0, r1):
        assert len(r["bucketed"]) == len(r["flat"]) == 4
        for got, want in zip(r["bucketed"], r["flat"], strict=True):
            assert torch.allclose(got, want, rtol=1e-6, atol=1e-7)
        assert r["unused_none"] and r["unarmed_local"]
        assert r["launched_during_backward"] == 3  # every bucket left during backward, none waited for `unused`
        assert r["skipped_unused"] == [4, 2]  # 4 one-parameter buckets, the 2 of `unused` not reduced
    for a, b in zip(r0["bucketed"], r1["bucketed"], strict=True):
        assert torch.equal(a, b)  # every rank holds the same mean
