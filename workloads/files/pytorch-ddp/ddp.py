#!/usr/bin/env python3
"""Distributed data-parallel training of a small model on synthetic data.

Every process learns the same linear function from its own random samples; DDP averages the
gradients, so all replicas stay identical and the loss falls. Rank 0 prints the loss of every
epoch, averaged over all ranks, as ``epoch <n> loss <value>``.

Run it under torchrun (which sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT):

    torchrun --nnodes=2 --nproc_per_node=8 --rdzv_backend=c10d \
        --rdzv_endpoint=<first node>:29500 ddp.py --epochs 10

The backend is nccl on GPUs and gloo on CPUs (``--backend auto``).
"""

from __future__ import annotations

import argparse
import os
import socket
import time

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

FEATURES = 32


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["auto", "nccl", "gloo"], default="auto")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--steps-per-epoch", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=1234)
    return parser.parse_args(argv)


def make_model():
    return nn.Sequential(nn.Linear(FEATURES, 64), nn.ReLU(), nn.Linear(64, 1))


def batch(generator, teacher, size, device):
    """Samples of the target function y = x . w + 0.5, with a little noise."""
    x = torch.randn(size, FEATURES, generator=generator)
    y = x @ teacher + 0.5 + 0.01 * torch.randn(size, 1, generator=generator)
    return x.to(device), y.to(device)


def main(argv=None):
    args = parse_args(argv)
    backend = args.backend
    if backend == "auto":
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    dist.init_process_group(backend=backend)
    rank, world = dist.get_rank(), dist.get_world_size()
    if rank == 0:
        print(f"training on {world} processes, backend {backend}", flush=True)
    print(f"rank {rank} of {world} on {socket.gethostname()} ({device})", flush=True)

    # The same initial weights and target everywhere; the data differs per rank.
    torch.manual_seed(args.seed)
    teacher = torch.randn(FEATURES, 1)
    model = DistributedDataParallel(
        make_model().to(device), device_ids=[device.index] if device.type == "cuda" else None
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr)
    loss_fn = nn.MSELoss()
    generator = torch.Generator().manual_seed(args.seed + 1 + rank)

    start = time.monotonic()
    for epoch in range(1, args.epochs + 1):
        total = torch.zeros(1, device=device)
        for _ in range(args.steps_per_epoch):
            x, y = batch(generator, teacher, args.batch_size, device)
            optimizer.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
            total += loss.detach()
        dist.all_reduce(total)
        mean = total.item() / (world * args.steps_per_epoch)
        if rank == 0:
            print(f"epoch {epoch} loss {mean:.6f}", flush=True)
    if rank == 0:
        print(f"done: {args.epochs} epochs in {time.monotonic() - start:.1f} s", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
