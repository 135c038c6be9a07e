#!/usr/bin/env python3
"""Compare two merged model folders tensor by tensor, in units of output rounding steps.

usage: compare_outputs.py CLAIRE_DIR REFERENCE_DIR [--max-steps 1]

For BF16/F16 outputs a "step" is one unit in the last place of the stored type:
the two values' bit patterns, read as sign-magnitude integers, differ by at most
--max-steps. Exits 1 when any element is further apart.
"""
import argparse, glob, os, sys
import torch
from safetensors.torch import load_file

def load_dir(d):
    out = {}
    for f in sorted(glob.glob(os.path.join(d, "*.safetensors"))):
        out.update(load_file(f))
    return out

def ordered_bits(t):
    """Bit patterns mapped to integers that are monotonic in the float value."""
    if t.dtype == torch.bfloat16 or t.dtype == torch.float16:
        b = t.view(torch.int16).to(torch.int64)
        return torch.where(b < 0, -(b & 0x7fff), b)
    b = t.to(torch.float32).view(torch.int32).to(torch.int64)
    return torch.where(b < 0, -(b & 0x7fffffff), b)

p = argparse.ArgumentParser()
p.add_argument("claire"); p.add_argument("reference")
p.add_argument("--max-steps", type=int, default=1)
a = p.parse_args()
x, y = load_dir(a.claire), load_dir(a.reference)
if set(x) != set(y):
    print("tensor names differ:", sorted(set(x) ^ set(y))[:10]); sys.exit(1)
worst, differing, total = 0, 0, 0
for name in sorted(x):
    u, v = x[name], y[name]
    if u.shape != v.shape or u.dtype != v.dtype:
        print(f"{name}: {u.dtype}{list(u.shape)} vs {v.dtype}{list(v.shape)}"); sys.exit(1)
    if not u.is_floating_point():
        same = torch.equal(u, v); worst = max(worst, 0 if same else 1 << 30); continue
    steps = (ordered_bits(u) - ordered_bits(v)).abs()
    worst = max(worst, int(steps.max()))
    differing += int((steps > 0).sum()); total += steps.numel()
print(f"{len(x)} tensors, {total} elements: {differing} differ ({100.0 * differing / max(total, 1):.4f}%), "
      f"largest difference {worst} step(s)")
sys.exit(0 if worst <= a.max_steps else 1)
