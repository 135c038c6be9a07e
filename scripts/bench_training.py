"""Training throughput of Claire against PyTorch (transformers' LlamaForCausalLM)
for the demo model, the same batch shape and the same thread count, on CPU.

Usage: python3 scripts/bench_training.py [--threads 2] [--steps 40] [--repeat 3] [--merge-tool PATH]

Both sides run full training steps: forward, backward, gradient clipping and an
AdamW update, on batches of 16 sequences of 64 tokens. Claire's time is the
difference between a long and a short `merge-tool train pretrain` run, which
cancels start-up and checkpoint writing.
"""
import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

BATCH, LENGTH = 16, 64
DEMO = dict(hidden_size=128, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=352, vocab_size=261, max_position_embeddings=128, rms_norm_eps=1e-5,
            rope_theta=10000.0, tie_word_embeddings=False, hidden_act="silu")

parser = argparse.ArgumentParser()
parser.add_argument("--threads", type=int, default=2)
parser.add_argument("--steps", type=int, default=40)
parser.add_argument("--merge-tool", default=".build/release/merge-tool")
parser.add_argument("--repeat", type=int, default=3, help="report the best of this many measurements")
args = parser.parse_args()


def claire_seconds(steps, data, work):
    out = os.path.join(work, f"out-{steps}")
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(args.threads))
    start = time.perf_counter()
    subprocess.run([args.merge_tool, "train", "pretrain", "--data", data, "--steps", str(steps),
                    "--batch-size", str(BATCH), "-o", out], check=True, env=env, stdout=subprocess.DEVNULL)
    elapsed = time.perf_counter() - start
    shutil.rmtree(out)
    return elapsed


def bench_claire():
    work = tempfile.mkdtemp()
    try:
        data = os.path.join(work, "docs.jsonl")
        # bos + 63 bytes + eos = 65 tokens: 64 inputs per sequence, no padding.
        with open(data, "w") as f:
            for i in range(256):
                text = (f"document {i} " + "the red fox sees the blue box. " * 4)[:63]
                f.write(json.dumps({"text": text}) + "\n")
        short = claire_seconds(5, data, work)
        long = claire_seconds(5 + args.steps, data, work)
        return BATCH * LENGTH * args.steps / (long - short)
    finally:
        shutil.rmtree(work)


def bench_torch():
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    model = LlamaForCausalLM(LlamaConfig(**DEMO))
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    tokens = torch.randint(0, 256, (BATCH, LENGTH + 1))
    inputs, labels = tokens[:, :-1], tokens[:, 1:]

    def step():
        optimizer.zero_grad(set_to_none=True)
        logits = model(input_ids=inputs).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()

    for _ in range(5):
        step()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    return BATCH * LENGTH * args.steps / (time.perf_counter() - start)


# Best of several runs on each side: on a shared machine the slow runs measure the neighbours.
claire = max(bench_claire() for _ in range(args.repeat))
pytorch = max(bench_torch() for _ in range(args.repeat))
print(f"threads {args.threads}, batch {BATCH}x{LENGTH}, demo model")
print(f"claire   {claire:10.0f} tokens/s")
print(f"pytorch  {pytorch:10.0f} tokens/s  (torch {torch.__version__})")
print(f"ratio    {claire / pytorch:10.2f}x")
