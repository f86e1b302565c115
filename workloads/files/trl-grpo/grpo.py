#!/usr/bin/env python3
"""GRPO training with TRL, generating completions on a separate vLLM server.

The reward favours completions close to a target length, a task that needs no reference
answers, so any prompt dataset works (the default is trl-lib/tldr). Start the server first
(``trl vllm-serve --model <model>``) on another node, then run this under
``accelerate launch`` on the training nodes with ``--vllm-server-host <that node>``.
"""

from __future__ import annotations

import argparse

from datasets import load_dataset
from trl import GRPOConfig, GRPOTrainer


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="Hugging Face model name or path")
    parser.add_argument("--dataset", default="trl-lib/tldr", help="a dataset with a 'prompt' column")
    parser.add_argument("--max-steps", type=int, default=100)
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--vllm-server-host", required=True)
    parser.add_argument("--vllm-server-port", type=int, default=8000)
    parser.add_argument("--target-length", type=int, default=200, help="characters the reward aims for")
    return parser.parse_args(argv)


def length_reward(target):
    def reward(completions, **_):
        texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
        return [-abs(len(text) - target) / target for text in texts]

    return reward


def main(argv=None):
    args = parse_args(argv)
    config = GRPOConfig(
        output_dir=args.output_dir,
        max_steps=args.max_steps,
        bf16=True,
        logging_steps=1,
        use_vllm=True,
        vllm_mode="server",
        vllm_server_host=args.vllm_server_host,
        vllm_server_port=args.vllm_server_port,
    )
    trainer = GRPOTrainer(
        model=args.model,
        reward_funcs=length_reward(args.target_length),
        args=config,
        train_dataset=load_dataset(args.dataset, split="train"),
    )
    trainer.train()
    trainer.save_model(args.output_dir)


if __name__ == "__main__":
    main()
