#!/usr/bin/env bash
# Checks that the merge-config.yml `merge-tool fuse` writes beside a merged model runs
# in mergekit and gives the same tensors: for each method below, fuses a trio
# (MODELS/{base,sft,dpo}, Hugging Face folders of one base), runs the written recipe
# through mergekit-yaml, and compares every tensor of the two outputs by how many
# steps of the output type apart they are.
#
#   scripts/check_mergekit_recipe.sh MODELS [TOOL]
#
# TOOL defaults to .build/debug/merge-tool. Needs python3
# with torch, safetensors and mergekit (mergekit-yaml on PATH). Exits 1 when mergekit
# refuses a recipe, or an output has another tensor set, shape or config dtype, or a
# method that should agree has fewer than 99.9 % of its elements within one step.
#
# Which methods should agree: "exact" ones always; "magnitude" ones (the trims of ties
# and breadcrumbs) only on Float32 inputs — on BF16 inputs many deltas share the
# magnitude at the trim threshold, and the two tools keep different ones of them;
# "random" ones (DARE, DELLA: mergekit draws other masks) and "ignored" ones (an option
# mergekit ignores, named in the recipe's comment) are only run and reported.
set -euo pipefail
cd "$(dirname "$0")/.."
models=${1:?usage: scripts/check_mergekit_recipe.sh MODELS [TOOL]}
tool=${2:-.build/debug/merge-tool}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=0

# name | kind | fuse flags (the output type is bf16 so the recipe says
# dtype: float32, out_dtype: bfloat16 — mergekit then computes in Float32 as Claire does)
cases=(
  "linear|exact|--method linear --weights 0.6,0.4"
  "task_arithmetic|exact|--method task_arithmetic --weights 0.7,0.5 --lambda 0.9"
  "slerp|exact|--method slerp --t 0.3"
  "model_stock|exact|--method model_stock"
  "ties|magnitude|--method ties --density 0.3,0.6"
  "ties_no_normalize|magnitude|--method ties --density 0.5 --no-normalize --rescale none"
  "breadcrumbs|magnitude|--method breadcrumbs --density 0.8 --gamma 0.05"
  "ties_count|ignored|--method ties --density 0.5 --consensus count"
  "dare_ties|random|--method dare_ties --density 0.5 --rescale l1 --seed 3"
  "della|random|--method della --density 0.5 --epsilon 0.1 --seed 3"
)

for entry in "${cases[@]}"; do
  IFS='|' read -r name kind flags <<<"$entry"
  read -r -a args <<<"$flags"
  inputs=("$models/sft" "$models/dpo")
  [ "$name" = slerp ] && inputs=("$models/sft")
  base=(--base "$models/base")
  if ! "$tool" fuse "${inputs[@]}" "${base[@]}" "${args[@]}" --dtype bf16 -o "$work/$name-claire" \
      >"$work/$name.claire.log" 2>&1; then
    echo "$name: merge-tool fuse failed:"; cat "$work/$name.claire.log"; failed=1; continue
  fi
  if ! mergekit-yaml "$work/$name-claire/merge-config.yml" "$work/$name-mergekit" --no-lazy-unpickle \
      >"$work/$name.mergekit.log" 2>&1; then
    echo "$name: mergekit refused the recipe:"; grep -E "Error|error" "$work/$name.mergekit.log" | tail -3
    failed=1; continue
  fi
  if ! python3 - "$work/$name-claire" "$work/$name-mergekit" "$name" "$kind" "$models/base" <<'PY'
import glob, json, sys
import torch
from safetensors.torch import load_file

claire_dir, mergekit_dir, name, kind, base_dir = sys.argv[1:6]

def load(folder):
    tensors = {}
    for path in sorted(glob.glob(folder + "/*.safetensors")):
        tensors.update(load_file(path))
    return tensors

def ordered(t):
    # Sign-magnitude bit patterns mapped onto a line where adjacent values differ by 1.
    bits = {torch.bfloat16: (torch.int16, 15), torch.float16: (torch.int16, 15),
            torch.float32: (torch.int32, 31)}[t.dtype]
    i = t.view(bits[0]).to(torch.int64)
    magnitude = i & ((1 << bits[1]) - 1)
    return torch.where(i < 0, -magnitude, magnitude)

a, b = load(claire_dir), load(mergekit_dir)
problems = []
if set(a) != set(b):
    problems.append(f"tensor sets differ: only Claire {sorted(set(a) - set(b))}, only mergekit {sorted(set(b) - set(a))}")
total = same = within = 0
worst = 0
for key in sorted(set(a) & set(b)):
    x, y = a[key], b[key]
    if x.shape != y.shape or x.dtype != y.dtype:
        problems.append(f"{key}: {x.dtype}{list(x.shape)} vs {y.dtype}{list(y.shape)}")
        continue
    steps = (ordered(x) - ordered(y)).abs()
    total += steps.numel()
    same += int((steps == 0).sum())
    within += int((steps <= 1).sum())
    worst = max(worst, int(steps.max()))
configs = []
for folder in (claire_dir, mergekit_dir):
    config = json.load(open(folder + "/config.json"))
    configs.append(config.get("torch_dtype") or config.get("dtype"))
share = within / total if total else 0
base = load(base_dir)
float32_inputs = all(t.dtype == torch.float32 for t in base.values() if t.is_floating_point())
must_agree = kind == "exact" or (kind == "magnitude" and float32_inputs)
note = {"random": "  (random masks differ)", "ignored": "  (an option mergekit ignores)",
        "magnitude": "" if float32_inputs else "  (BF16 inputs: threshold ties kept differently)"}.get(kind, "")
print(f"{name:18s} tensors {len(a):3d}/{len(b):3d}  elements {total}  identical {100 * same / max(total, 1):7.3f} %  "
      f"within one step {100 * share:7.3f} %  worst {worst} steps  config dtype {configs[0]} / {configs[1]}"
      + note)
if problems:
    for p in problems[:5]:
        print("  " + p)
if problems or configs[0] != configs[1] or (must_agree and share < 0.999):
    sys.exit(1)
PY
  then failed=1; fi
done
exit $failed
