#!/usr/bin/env python3
"""Recompute `merge-tool stats` figures directly with torch and compare.

usage: stats_check.py BASE FT1 [FT2] --json stats.json [--density 0.1]

BASE and FT are Hugging Face folders or .safetensors files. stats.json is the
output of `merge-tool stats FT1 [FT2] --base BASE --json`. Prints each model-level
figure as (merge-tool, torch, relative difference) and exits 1 when any differs
by more than 1e-6 relative (counts must match exactly).
"""
import argparse, glob, json, math, os, sys
import torch
from safetensors.torch import load_file

p = argparse.ArgumentParser()
p.add_argument("base")
p.add_argument("tuned", nargs="+")
p.add_argument("--json", required=True)
p.add_argument("--density", type=float, default=0.1)
a = p.parse_args()

def load(path):
    files = [path] if os.path.isfile(path) else sorted(glob.glob(os.path.join(path, "*.safetensors")))
    out = {}
    for f in files:
        out.update(load_file(f))
    return out

report = json.load(open(a.json))
thresholds = report["thresholds"]
base = load(a.base)
tuned = [load(t) for t in a.tuned]
names = sorted(base)

def flat(i, name):
    return (tuned[i][name].float() - base[name].float()).flatten()

failures = 0
def check(label, ours, theirs, exact=False):
    global failures
    if ours is None or theirs is None:
        ok = ours is None and theirs is None
        rel = 0.0
    else:
        rel = abs(ours - theirs) / max(abs(theirs), 1e-300)
        ok = (ours == theirs) if exact else rel <= 1e-6
    failures += 0 if ok else 1
    print(f"{label:38s} merge-tool {ours!s:>24}  torch {theirs!s:>24}  rel.diff {rel:.2e} {'ok' if ok else 'MISMATCH'}")

model = report["model"]
for i, entry in enumerate(report["deltas"]):
    n = zeros = 0
    within = [0] * len(thresholds)
    l1 = l2 = 0.0
    mx = 0.0
    mags = []
    for name in names:
        d = flat(i, name).double()
        finite = torch.isfinite(d)
        d = d[finite].abs()
        n += d.numel()
        zeros += int((d == 0).sum())
        for j, t in enumerate(thresholds):
            within[j] += int((d <= torch.tensor(t, dtype=torch.float32).double()).sum())
        l1 += float(d.sum())
        l2 += float((d * d).sum())
        mx = max(mx, float(d.max()) if d.numel() else 0.0)
        mags.append(d.float())
    allmags = torch.cat(mags)
    k = max(1, n // 100)
    top = float(torch.topk(allmags, k).values.double().sum())
    ours = model["deltas"][i]
    tag = entry["name"]
    check(f"{tag}: elements", ours["elements"], n, exact=True)
    check(f"{tag}: zeros", ours["zeros"], zeros, exact=True)
    for j, t in enumerate(thresholds):
        check(f"{tag}: entries with |d| <= {t:g}", ours["within"][j]["count"], within[j], exact=True)
    check(f"{tag}: L1", ours["l1"], l1)
    check(f"{tag}: L2", ours["l2"], math.sqrt(l2))
    check(f"{tag}: max |d|", ours["max_abs"], mx)
    hoyer = (math.sqrt(n) - l1 / math.sqrt(l2)) / (math.sqrt(n) - 1)
    check(f"{tag}: Hoyer", ours["hoyer"], hoyer)
    check(f"{tag}: top 1 % mass", ours["top_mass"], top)
    print(f"{tag}: zero share {zeros / n:.4f}")

if len(tuned) == 2:
    dot = sa = sb = 0.0
    both = agree = entries = dropped = 0
    inter = supp_a = supp_b = 0
    for name in names:
        x, y = flat(0, name), flat(1, name)
        ok = torch.isfinite(x) & torch.isfinite(y)
        x, y = x[ok], y[ok]
        dot += float((x.double() * y.double()).sum())
        sa += float((x.double() ** 2).sum())
        sb += float((y.double() ** 2).sum())
        nz = (x != 0) & (y != 0)
        both += int(nz.sum())
        agree += int((nz & ((x > 0) == (y > 0))).sum())
        s = x + y
        neg = s < 0
        for v in (x, y):
            entries += int((v != 0).sum())
            dropped += int(((v != 0) & ((v < 0) != neg)).sum())
        supports = []
        for v in (flat(0, name), flat(1, name)):
            m = v.abs()
            m[~torch.isfinite(m)] = 0
            kk = max(1, int(a.density * m.numel()))
            t = torch.topk(m, kk).values[-1]
            supports.append((m >= t) & (m != 0))
        inter += int((supports[0] & supports[1]).sum())
        supp_a += int(supports[0].sum())
        supp_b += int(supports[1].sum())
    pair = model["pairs"][0]
    check("cosine", pair["cosine"], dot / math.sqrt(sa * sb))
    check("both non-zero", pair["both_nonzero"], both, exact=True)
    check("sign agreements", pair["sign_agreements"], agree, exact=True)
    check("TIES non-zero entries", model["ties"]["entries"], entries, exact=True)
    check("TIES dropped", model["ties"]["dropped"], dropped, exact=True)
    check("top-k support (first)", pair["support_first"], supp_a, exact=True)
    check("top-k support (second)", pair["support_second"], supp_b, exact=True)
    check("top-k support intersection", pair["support_intersection"], inter, exact=True)
    print(f"sign conflicts among shared entries: {1 - agree / both:.4f}; TIES drops {dropped / entries:.4f}")

print("all figures agree" if failures == 0 else f"{failures} figures differ")
sys.exit(1 if failures else 0)
