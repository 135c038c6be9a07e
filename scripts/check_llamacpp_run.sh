#!/usr/bin/env bash
# Checks that GGUF files written by `merge-tool convert` and `merge-tool fuse --format gguf`
# load and run in llama.cpp, and that llama.cpp tokenizes and generates as transformers does.
#
# usage: scripts/check_llamacpp_run.sh [--steps N] [--keep DIR]
#
# 1. Fetches the llama-cpp-python source distribution from the Python package index
#    (the llama.cpp it vendors) and builds `llama-simple` and `llama-tokenize` with cmake,
#    cached under .build-llamacpp/ (delete it to rebuild).
# 2. Trains a fresh small model with `merge-tool train pretrain` (hidden 256 and
#    intermediate 512, so q4_k has whole blocks), a short SFT run from it, and fuses the two.
# 3. Converts the model to f16, q8_0 and q4_k, and the fused model to f16 with
#    `fuse --format gguf`.
# 4. Compares, on several prompts, llama.cpp's greedy output with transformers' (f16 and the
#    fused file: equal token for token; q8_0 and q4_k: load and generate, agreement shown),
#    and the token ids of llama-tokenize with transformers' on a set of test strings.
#
# MERGE_TOOL names the merge-tool to use (default: .build/release/merge-tool, built when
# missing). Needs python3 with torch and transformers (installed with pip when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
start=$(date +%s)

version=0.3.36
steps=100
keep=""
while [ $# -gt 0 ]; do
    case "$1" in
        --steps) steps=$2; shift 2 ;;
        --keep) keep=$2; shift 2 ;;
        -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "error: unknown argument '$1'" >&2; exit 64 ;;
    esac
done

say() { printf '== %s (%ds)\n' "$*" $(( $(date +%s) - start )); }

# --- llama.cpp ---------------------------------------------------------------------------
cache=$root/.build-llamacpp
src=$cache/llama_cpp_python-$version/vendor/llama.cpp
bin=$cache/build/bin
mkdir -p "$cache"
if [ ! -f "$src/CMakeLists.txt" ]; then
    say "fetching llama-cpp-python $version (source distribution)"
    # Only this package from source: its metadata needs no build, and nothing is compiled here.
    python3 -m pip download --quiet --no-deps --no-binary llama-cpp-python "llama-cpp-python==$version" -d "$cache"
    tar -xzf "$cache/llama_cpp_python-$version.tar.gz" -C "$cache"
fi
if ! command -v cmake > /dev/null; then
    say "installing cmake"
    python3 -m pip install --quiet cmake
fi
# Not -march=native: a CPU may report AMX that its sandbox does not allow (q8_0 then dies
# with an illegal instruction); AVX2 is plenty for these small models.
if ! grep -q "^GGML_NATIVE:BOOL=OFF" "$cache/build/CMakeCache.txt" 2> /dev/null; then
    say "configuring llama.cpp"
    cmake -S "$src" -B "$cache/build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
        -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF -DLLAMA_OPENSSL=OFF \
        -DLLAMA_BUILD_EXAMPLES=ON -DLLAMA_BUILD_TOOLS=ON -DGGML_OPENMP=OFF \
        -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
        > "$cache/configure.log" 2>&1 || { tail -20 "$cache/configure.log"; exit 1; }
fi
say "building llama-simple and llama-tokenize (cached)"
jobs=$(nproc 2>/dev/null || echo 2)
cmake --build "$cache/build" -j"$jobs" --target llama-simple llama-tokenize > "$cache/build.log" 2>&1 \
    || { tail -20 "$cache/build.log"; exit 1; }

# --- python ------------------------------------------------------------------------------
if ! python3 -c "import torch, transformers" 2> /dev/null; then
    say "installing transformers"
    python3 -m pip install --quiet transformers
fi

# --- merge-tool and models ---------------------------------------------------------------
tool=${MERGE_TOOL:-$root/.build/release/merge-tool}
if [ ! -x "$tool" ]; then
    say "building merge-tool (release)"
    swift build -c release --product merge-tool > /dev/null
fi
if [ -n "$keep" ]; then work=$keep; mkdir -p "$work"; else work=$(mktemp -d); trap 'rm -rf "$work"' EXIT; fi

cat > "$work/config.json" <<'JSON'
{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 256, "num_hidden_layers": 2,
 "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 64, "intermediate_size": 512, "vocab_size": 261,
 "max_position_embeddings": 128, "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "rope_scaling": null,
 "hidden_act": "silu", "attention_bias": false, "mlp_bias": false, "tie_word_embeddings": false,
 "bos_token_id": 256, "eos_token_id": 257, "pad_token_id": 258, "torch_dtype": "float32"}
JSON
say "training a small model ($steps pretraining steps, then SFT)"
"$tool" train pretrain --config "$work/config.json" --steps "$steps" --batch-size 8 -o "$work/base" --force > /dev/null
"$tool" train sft --base "$work/base" --steps $(( steps / 3 + 1 )) --batch-size 8 -o "$work/sft" --force > /dev/null
say "converting and fusing"
for type in f16 q8_0 q4_k; do
    "$tool" convert "$work/base" "$work/base-$type.gguf" --type "$type" --force > /dev/null
done
"$tool" fuse "$work/sft" --base "$work/base" --method task_arithmetic -o "$work/fused" --force > /dev/null
"$tool" fuse "$work/sft" --base "$work/base" --method task_arithmetic --format gguf --type f16 -o "$work/fused-f16.gguf" \
    --force > /dev/null

say "running llama.cpp and transformers"
python3 - "$work" "$bin" <<'PY'
import os
import subprocess
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.utils import logging as transformers_logging

work, bin_dir = sys.argv[1], sys.argv[2]
torch.set_num_threads(2)
transformers_logging.disable_progress_bar()
N = 16
PROMPTS = [
    "<|bos|><|user|>Write in capitals: red fox box<|assistant|>",
    "<|bos|><|user|>Reverse: abc<|assistant|>",
    "<|bos|>The quick brown",
]
STRINGS = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    " leading space",
    "   three leading spaces and trailing  ",
    "line one\nline two\n\n\nafter blank lines\n",
    "tab\tand\r\ncrlf",
    "café naïve résumé",
    "Grüße aus Köln — “quotes” … ½",
    "日本語のテキストと中文",
    "emoji 🦊🎉 and a flag 🇫🇷",
    "<|user|>hi<|assistant|>hello<|eos|>",
    "<|bos|> <|user|> spaced <|assistant|> ",
    "not special: <|user| and <user|>",
    "12345 67.89 -0.5e10",
    "x",
]

def piece_bytes(tokenizer, ids):
    """Bytes llama.cpp prints for these ids: a byte token is its byte, a special token its text."""
    out = b""
    for i in ids:
        out += bytes([i]) if i < 256 else tokenizer.convert_ids_to_tokens(i).encode()
    return out

def transformers_greedy(model, tokenizer, prompt):
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=N, do_sample=False, eos_token_id=tokenizer.eos_token_id,
                             pad_token_id=tokenizer.pad_token_id)
    new = out[0, ids.shape[1]:].tolist()
    if new and new[-1] == tokenizer.eos_token_id:
        new = new[:-1]
    return piece_bytes(tokenizer, new)

def llama_greedy(gguf, prompt):
    r = subprocess.run([os.path.join(bin_dir, "llama-simple"), "-m", gguf, "-n", str(N), prompt],
                       capture_output=True)
    if r.returncode != 0:
        err = r.stderr.decode(errors="replace").strip().splitlines()
        raise SystemExit(f"FAIL: llama-simple on {os.path.basename(gguf)}: " + " / ".join(err[-3:]))
    text = r.stdout
    if not text.startswith(prompt.encode()):
        raise SystemExit(f"FAIL: llama-simple echoed another prompt: {text[:80]!r}")
    return text[len(prompt.encode()):].removesuffix(b"\n")

passed = failures = 0
def check(ok, message):
    global passed, failures
    print(("ok   " if ok else "FAIL ") + message)
    passed += 1 if ok else 0
    failures += 0 if ok else 1

tokenizer = AutoTokenizer.from_pretrained(os.path.join(work, "base"))

print("-- tokenization (llama-tokenize on base-f16.gguf vs transformers)")
for i, s in enumerate(STRINGS):
    path = os.path.join(work, f"string{i}.txt")
    with open(path, "wb") as f:
        f.write(s.encode())
    r = subprocess.run([os.path.join(bin_dir, "llama-tokenize"), "-m", os.path.join(work, "base-f16.gguf"), "-f", path,
                        "--ids", "--no-escape", "--log-disable"], capture_output=True, text=True)
    if r.returncode != 0:
        check(False, f"llama-tokenize failed on {s!r}: {r.stderr.strip().splitlines()[-1:]}")
        continue
    lines = [l for l in r.stdout.splitlines() if l.startswith("[")]
    ours = [int(t) for t in lines[-1].strip("[]").split(",") if t.strip()] if lines else None
    theirs = tokenizer(s).input_ids
    check(ours == theirs, f"{s!r}: {len(theirs)} tokens" + ("" if ours == theirs else f"\n     llama.cpp    {ours}\n     transformers {theirs}"))

for label, folder, files, exact in [
    ("base", "base", ["base-f16.gguf", "base-q8_0.gguf", "base-q4_k.gguf"], {"base-f16.gguf"}),
    ("fused (fuse --format gguf)", "fused", ["fused-f16.gguf"], {"fused-f16.gguf"}),
]:
    print(f"-- greedy generation, {N} tokens: {label}")
    model = AutoModelForCausalLM.from_pretrained(os.path.join(work, folder), dtype=torch.float32)
    for prompt in PROMPTS:
        expected = transformers_greedy(model, tokenizer, prompt)
        print(f"   {prompt!r}\n     transformers        {expected.decode(errors='replace')!r}")
        for name in files:
            got = llama_greedy(os.path.join(work, name), prompt)
            same = got == expected
            mark = "equal" if same else "differs"
            print(f"     {name:<19} {got.decode(errors='replace')!r} ({mark})")
            if name in exact:
                check(same, f"{name} equals transformers")
            else:
                print(f"ok   {name} loads and generates")

print(f"{passed} passed, {failures} failed")
sys.exit(1 if failures else 0)
PY
say "done"
