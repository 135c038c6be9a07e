#!/usr/bin/env python3
"""Compares `merge-tool convert FOLDER OUT.gguf` with llama.cpp's own converter.

usage: compare_llamacpp.py LLAMA_CPP_DIR MODEL_FOLDER [--type f16] [--tool .build/release/merge-tool]

LLAMA_CPP_DIR holds llama.cpp's convert_hf_to_gguf.py (for example the copy
vendored in the llama-cpp-python source distribution on PyPI). Both converters
run on MODEL_FOLDER; the script then checks that the two GGUF files have the
same tensors (names, types, shapes, bytes) and the same architecture and
tokenizer keys. `general.*` keys that name the model are not compared.

llama.cpp identifies a BPE pre-tokenizer by hashing its output on a test text
and refuses tokenizers it has not seen; for those, the reference run is told
"default", the name Claire writes when it does not recognize the split pattern.
Needs torch, transformers, sentencepiece and gguf.
"""
import argparse
import os
import runpy
import subprocess
import sys
import tempfile

import numpy as np

p = argparse.ArgumentParser()
p.add_argument("llama_cpp")
p.add_argument("model")
p.add_argument("--type", default="f16")
p.add_argument("--tool", default=os.path.join(os.path.dirname(__file__), "..", ".build", "release", "merge-tool"))
p.add_argument("--reference-only", action="store_true", help=argparse.SUPPRESS)
p.add_argument("--out", help=argparse.SUPPRESS)
a = p.parse_args()

if a.reference_only:
    sys.path.insert(0, a.llama_cpp)
    import conversion.base as base
    original = base.TextModel.get_vocab_base_pre

    def tolerant(self, tokenizer):
        try:
            return original(self, tokenizer)
        except NotImplementedError:
            return "default"

    base.TextModel.get_vocab_base_pre = tolerant
    script = os.path.join(a.llama_cpp, "convert_hf_to_gguf.py")
    sys.argv = [script, a.model, "--outtype", a.type, "--outfile", a.out]
    runpy.run_path(script, run_name="__main__")
    sys.exit(0)

import gguf  # noqa: E402

work = tempfile.mkdtemp()
ref_path, ours_path = os.path.join(work, "reference.gguf"), os.path.join(work, "claire.gguf")
subprocess.run([sys.executable, __file__, a.llama_cpp, a.model, "--type", a.type, "--reference-only", "--out", ref_path],
               check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
subprocess.run([a.tool, "convert", a.model, ours_path, "--type", a.type], check=True)
ref, ours = gguf.GGUFReader(ref_path), gguf.GGUFReader(ours_path)

problems = []
ref_tensors = {t.name: t for t in ref.tensors}
our_tensors = {t.name: t for t in ours.tensors}
if set(ref_tensors) != set(our_tensors):
    problems.append(f"tensor names differ: only reference {sorted(set(ref_tensors) - set(our_tensors))}, "
                    f"only Claire {sorted(set(our_tensors) - set(ref_tensors))}")
for name in sorted(set(ref_tensors) & set(our_tensors)):
    r, o = ref_tensors[name], our_tensors[name]
    if r.tensor_type != o.tensor_type:
        problems.append(f"{name}: type {r.tensor_type.name} vs {o.tensor_type.name}")
    elif list(r.shape) != list(o.shape):
        problems.append(f"{name}: shape {list(r.shape)} vs {list(o.shape)}")
    elif not np.array_equal(np.asarray(r.data).view(np.uint8), np.asarray(o.data).view(np.uint8)):
        problems.append(f"{name}: data differs")

def fields(reader):
    out = {}
    for k, f in reader.fields.items():
        if k.startswith("GGUF.") or k in ("general.name", "general.size_label", "general.basename",
                                          "general.finetune", "general.version", "general.type"):
            continue
        out[k] = f.contents()
    return out

rf, of = fields(ref), fields(ours)
for k in sorted(set(rf) | set(of)):
    if k not in of:
        problems.append(f"key {k} missing from Claire's file")
    elif k not in rf:
        # llama.cpp's converter leaves out an empty merge list, which its own loader then
        # refuses; Claire writes it (see docs/convert.md).
        if k == "tokenizer.ggml.merges" and len(of[k]) == 0:
            continue
        problems.append(f"key {k} only in Claire's file")
    elif rf[k] != of[k]:
        problems.append(f"key {k}: {str(rf[k])[:80]} vs {str(of[k])[:80]}")

print(f"{len(ref_tensors)} tensors, {len(rf)} keys compared ({a.type})")
for line in problems:
    print("DIFF", line)
print("identical" if not problems else f"{len(problems)} differences")
sys.exit(1 if problems else 0)
