#!/usr/bin/env python3
"""SLERP outputs against the exact result, in BF16 rounding steps.

usage: slerp_exact.py WORKDIR   (the folder bench/check_mergekit.sh filled)

Recomputes the slerp recipe of check_mergekit.sh (t: [0, 0.5, 0.3] across layers for
self_attn tensors, 0.4 elsewhere; each tensor as one vector, as mergekit) in float64, rounds it
to BF16 once, and reports how far Claire's and mergekit's outputs are from it. Where an
entry's result nearly cancels, float32 arithmetic is many BF16 steps off; this tells
which tool is. Exits 1 when Claire is more than one step away anywhere.
"""
import glob, os, re, sys
import torch
from safetensors.torch import load_file

work = sys.argv[1]

def load(d):
    out = {}
    for f in sorted(glob.glob(os.path.join(d, "*.safetensors"))):
        out.update(load_file(f))
    return out

def t_for(name, layers):
    m = re.search(r"layers\.(\d+)\.", name)
    if "self_attn" not in name or not m:
        return 0.4
    points = [0, 0.5, 0.3]
    position = int(m.group(1)) / (layers - 1) * (len(points) - 1)
    i = min(int(position), len(points) - 2)
    return points[i] + (points[i + 1] - points[i]) * (position - i)

def steps(t):
    b = t.view(torch.int16).to(torch.int64)
    return torch.where(b < 0, -(b & 0x7fff), b)

base, model = load(f"{work}/models/base"), load(f"{work}/models/sft")
claire, mergekit = load(f"{work}/cl-slerp"), load(f"{work}/mk-slerp")
layers = 1 + max(int(m.group(1)) for n in base for m in [re.search(r"layers\.(\d+)\.", n)] if m)
count, far = 0, {"claire": [0, 0], "mergekit": [0, 0]}
for name, out in claire.items():
    a, b, t = base[name].double(), model[name].double(), t_for(name, layers)
    x = a.reshape(1, -1)
    y = b.reshape(x.shape)
    nx = x.norm(dim=1, keepdim=True); ny = y.norm(dim=1, keepdim=True)
    nx = torch.where(nx > 1e-8, nx, 1); ny = torch.where(ny > 1e-8, ny, 1)
    dot = ((x / nx) * (y / ny)).sum(dim=1, keepdim=True).clamp(-1, 1)
    linear = dot.abs() > 0.9995
    theta = torch.acos(torch.where(linear, 0, dot)); sin = torch.sin(theta)
    ca = torch.where(linear, 1 - t, torch.sin((1 - t) * theta) / sin)
    cb = torch.where(linear, t, torch.sin(t * theta) / sin)
    exact = steps((ca * x + cb * y).reshape(a.shape).to(torch.bfloat16))
    count += exact.numel()
    for tool, values in (("claire", out), ("mergekit", mergekit[name])):
        d = (steps(values) - exact).abs()
        far[tool][0] += int((d > 1).sum())
        far[tool][1] = max(far[tool][1], int(d.max()))
print(f"slerp vs exact    {count} elements more than 1 step from the float64 result: "
      f"claire {far['claire'][0]} (largest {far['claire'][1]}), mergekit {far['mergekit'][0]} (largest {far['mergekit'][1]})")
sys.exit(1 if far["claire"][0] else 0)
