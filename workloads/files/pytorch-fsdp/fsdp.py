#!/usr/bin/env python3
"""Fully sharded data-parallel pre-training of a Llama-family decoder on synthetic tokens.

The model is built from its shape alone (hidden size, layers, heads, key/value heads, MLP
size, vocabulary, rotary base, and for a mixture of experts the number of experts), so any
of the catalogue's presets runs without downloading weights or a tokenizer. Parameters are
created on the meta device, sharded layer by layer with FSDP2 (``fully_shard``) and only then
materialised, so a 70B model never needs to fit on one device.

Run it under torchrun; on GPUs it trains in bfloat16 over NCCL, on CPUs (for a smoke test) in
float32 over gloo. Rank 0 prints ``step <n> loss <value> tokens/s <value>``.
"""

from __future__ import annotations

import argparse
import math
import os
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from torch.utils.checkpoint import checkpoint


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    shape = parser.add_argument_group("model shape")
    shape.add_argument("--hidden-size", type=int, default=4096)
    shape.add_argument("--num-layers", type=int, default=32)
    shape.add_argument("--num-heads", type=int, default=32)
    shape.add_argument("--num-kv-heads", type=int, default=8)
    shape.add_argument("--intermediate-size", type=int, default=14336)
    shape.add_argument("--vocab-size", type=int, default=128256)
    shape.add_argument("--seq-len", type=int, default=8192)
    shape.add_argument("--rope-theta", type=float, default=500000.0)
    shape.add_argument("--num-experts", type=int, default=0, help="0: a dense MLP in every layer")
    shape.add_argument("--experts-per-token", type=int, default=2)
    train = parser.add_argument_group("training")
    train.add_argument("--batch-size", type=int, default=1, help="sequences per process and step")
    train.add_argument("--max-steps", type=int, default=100)
    train.add_argument("--lr", type=float, default=1e-4)
    train.add_argument("--no-activation-checkpointing", action="store_true")
    train.add_argument("--checkpoint-dir", default="", help="save the sharded model here at the end")
    train.add_argument("--seed", type=int, default=1234)
    return parser.parse_args(argv)


def rotary_tables(seq_len, head_dim, theta, device):
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim))
    angles = torch.outer(torch.arange(seq_len, device=device, dtype=torch.float32), inv_freq)
    return angles.cos(), angles.sin()


def apply_rotary(x, cos, sin):
    # x: (batch, heads, seq, head_dim); rotate the two halves of each head.
    first, second = x.float().chunk(2, dim=-1)
    cos, sin = cos[: x.shape[-2]], sin[: x.shape[-2]]
    rotated = torch.cat((first * cos - second * sin, first * sin + second * cos), dim=-1)
    return rotated.type_as(x)


class Attention(nn.Module):
    def __init__(self, args):
        super().__init__()
        self.heads, self.kv_heads = args.num_heads, args.num_kv_heads
        self.head_dim = args.hidden_size // args.num_heads
        self.q = nn.Linear(args.hidden_size, self.heads * self.head_dim, bias=False)
        self.kv = nn.Linear(args.hidden_size, 2 * self.kv_heads * self.head_dim, bias=False)
        self.out = nn.Linear(self.heads * self.head_dim, args.hidden_size, bias=False)

    def forward(self, x, cos, sin):
        batch, seq, _ = x.shape
        q = self.q(x).view(batch, seq, self.heads, self.head_dim).transpose(1, 2)
        k, v = self.kv(x).view(batch, seq, 2, self.kv_heads, self.head_dim).unbind(dim=2)
        k, v = k.transpose(1, 2), v.transpose(1, 2)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        repeat = self.heads // self.kv_heads
        if repeat > 1:
            k, v = k.repeat_interleave(repeat, dim=1), v.repeat_interleave(repeat, dim=1)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.out(y.transpose(1, 2).reshape(batch, seq, -1))


class SwiGLU(nn.Module):
    def __init__(self, hidden, intermediate):
        super().__init__()
        self.gate_up = nn.Linear(hidden, 2 * intermediate, bias=False)
        self.down = nn.Linear(intermediate, hidden, bias=False)

    def forward(self, x):
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


class MixtureOfExperts(nn.Module):
    """Top-k routing over SwiGLU experts (each token goes through k of them)."""

    def __init__(self, args):
        super().__init__()
        self.k = args.experts_per_token
        self.router = nn.Linear(args.hidden_size, args.num_experts, bias=False)
        self.experts = nn.ModuleList(
            SwiGLU(args.hidden_size, args.intermediate_size) for _ in range(args.num_experts)
        )

    def forward(self, x):
        tokens = x.reshape(-1, x.shape[-1])
        weights, chosen = self.router(tokens).softmax(dim=-1).topk(self.k, dim=-1)
        weights = weights / weights.sum(dim=-1, keepdim=True)
        out = torch.zeros_like(tokens)
        for index, expert in enumerate(self.experts):
            rows, slot = (chosen == index).nonzero(as_tuple=True)
            # Every expert runs, on no tokens if need be, so that all ranks make the same calls.
            out.index_add_(0, rows, expert(tokens[rows]) * weights[rows, slot, None].to(tokens.dtype))
        return out.view_as(x)


class Block(nn.Module):
    def __init__(self, args):
        super().__init__()
        self.attention_norm = nn.RMSNorm(args.hidden_size, eps=1e-5)
        self.attention = Attention(args)
        self.mlp_norm = nn.RMSNorm(args.hidden_size, eps=1e-5)
        if args.num_experts:
            self.mlp = MixtureOfExperts(args)
        else:
            self.mlp = SwiGLU(args.hidden_size, args.intermediate_size)
        self.checkpointed = not args.no_activation_checkpointing

    def _forward(self, x, cos, sin):
        x = x + self.attention(self.attention_norm(x), cos, sin)
        return x + self.mlp(self.mlp_norm(x))

    def forward(self, x, cos, sin):
        if self.checkpointed and self.training:
            return checkpoint(self._forward, x, cos, sin, use_reentrant=False)
        return self._forward(x, cos, sin)


class Decoder(nn.Module):
    def __init__(self, args):
        super().__init__()
        self.args = args
        self.embedding = nn.Embedding(args.vocab_size, args.hidden_size)
        self.layers = nn.ModuleList(Block(args) for _ in range(args.num_layers))
        self.norm = nn.RMSNorm(args.hidden_size, eps=1e-5)
        self.head = nn.Linear(args.hidden_size, args.vocab_size, bias=False)

    def forward(self, tokens):
        head_dim = self.args.hidden_size // self.args.num_heads
        cos, sin = rotary_tables(tokens.shape[1], head_dim, self.args.rope_theta, tokens.device)
        x = self.embedding(tokens)
        for layer in self.layers:
            x = layer(x, cos, sin)
        return self.head(self.norm(x))


def init_weights(model, num_layers):
    """Normal(0, 0.02) weights, output projections scaled down by depth; unit norms."""
    for name, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.Embedding)):
            std = 0.02 / math.sqrt(2 * num_layers) if name.endswith(("out", "down")) else 0.02
            nn.init.normal_(module.weight, std=std)
        elif isinstance(module, nn.RMSNorm):
            module.reset_parameters()


def count_parameters(args):
    hidden, head_dim = args.hidden_size, args.hidden_size // args.num_heads
    attention = hidden * head_dim * (2 * args.num_heads + 2 * args.num_kv_heads)
    mlp = 3 * hidden * args.intermediate_size * max(args.num_experts, 1) + hidden * args.num_experts
    return args.num_layers * (attention + mlp + 2 * hidden) + 2 * args.vocab_size * hidden + hidden


def main(argv=None):
    args = parse_args(argv)
    if args.hidden_size % args.num_heads or args.num_heads % args.num_kv_heads:
        raise SystemExit("hidden-size must divide by num-heads, and num-heads by num-kv-heads")
    if torch.cuda.is_available():
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local_rank)
        device, backend = torch.device("cuda", local_rank), "nccl"
        policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    else:
        device, backend, policy = torch.device("cpu"), "gloo", MixedPrecisionPolicy()
    dist.init_process_group(backend=backend)
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(args.seed)
    if rank == 0:
        print(
            f"{count_parameters(args) / 1e9:.2f}B parameters on {world} processes ({backend}), "
            f"{args.batch_size} x {args.seq_len} tokens per process and step",
            flush=True,
        )

    with torch.device("meta"):
        model = Decoder(args)
    for layer in model.layers:
        fully_shard(layer, mp_policy=policy)
    fully_shard(model, mp_policy=policy)
    model.to_empty(device=device)
    with torch.no_grad():
        init_weights(model, args.num_layers)
    model.train()
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=args.lr, weight_decay=0.1, fused=device.type == "cuda"
    )

    generator = torch.Generator(device=device).manual_seed(args.seed + rank)
    tokens_per_step = args.batch_size * args.seq_len * world
    start = time.monotonic()
    for step in range(1, args.max_steps + 1):
        data = torch.randint(
            args.vocab_size, (args.batch_size, args.seq_len + 1), device=device, generator=generator
        )
        logits = model(data[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1).float(), data[:, 1:].flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        reported = loss.detach().clone()
        dist.all_reduce(reported)
        if rank == 0:
            elapsed = time.monotonic() - start
            throughput = tokens_per_step * step / elapsed
            print(f"step {step} loss {reported.item() / world:.4f} tokens/s {throughput:.0f}", flush=True)
    if args.checkpoint_dir:
        import torch.distributed.checkpoint as dcp

        dcp.save({"model": model.state_dict()}, checkpoint_id=args.checkpoint_dir)
        if rank == 0:
            print(f"saved the sharded model to {args.checkpoint_dir}", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
