#!/usr/bin/env bash
# The scoring benchmarks at GPU scale, as one short script for a lent H100/H200 (under 8 minutes;
# never part of `make test`):
#
#   bash bench/gpu.sh                 # results and logs under $OUT (default: a temporary folder)
#
# 1. checks nvidia-smi and the venv (.venv; created with --system-site-packages when missing, so
#    a machine with torch and transformers installed works offline);
# 2. builds, on the GPU, a ~1B-parameter Llama (hidden 2048, 16 layers, MLP 5632, vocabulary
#    32,000) as the reference, a perturbed copy as the policy and a Llama reward model of the
#    same size, all bf16 safetensors in a temporary folder (bench/scoring_flops.py --save-models);
# 3. bench/scoring_flops.py on them: the KL path (plan_kl_batches + estimate_kl) against the bf16
#    torch.mm peak on cuda, again with torch's own SDPA kernel order (cuDNN attention allowed:
#    the path before rlhf_eval/attention.py), then in fp32 (the evaluator loads models in fp32
#    today); GPU_BENCH_SCORING="bfloat16:planless ..." picks the variants;
# 4. a timed end-to-end `rlhf-eval eval` of that policy (generation, KL, the 1B reward model) on
#    64 prompts x 4 samples, with its peak host RSS;
#    then bench/end_to_end.py --device cuda: the naive stack and rlhf-eval on the same GPU;
# 5. if vLLM is installed, the same evaluation as step 4 with `--backend vllm`: its wall time next
#    to step 4's and the mean KL of both (>= 0, and close: the same distribution sampled with
#    other random numbers); else "vLLM not installed: skipped";
# 6. bench/memory.py --quick if time is left (GPU_BENCH_MEMORY=0 skips it);
# then prints a short summary. Every step runs under `timeout` against one overall deadline.
#
# A dry run of the script's logic on a CPU, at tiny scale (a few minutes here):
#   GPU_BENCH_DEVICE=cpu GPU_BENCH_SCALE=tiny bash bench/gpu.sh
set -uo pipefail

cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
DEADLINE=$((SECONDS + ${GPU_BENCH_SECONDS:-460}))
DEVICE=${GPU_BENCH_DEVICE:-cuda}
SCALE=${GPU_BENCH_SCALE:-1b}
OUT=${OUT:-$(mktemp -d -t rlhf_gpu_bench.XXXXXX)}
WORK=$(mktemp -d -t rlhf_gpu_models.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$OUT"
SUMMARY=()

note() { printf '[gpu.sh %3ds] %s\n' "$SECONDS" "$*" >&2; }

# Runs "$@" under timeout: at most $1 seconds and never past the deadline (minus 10 s).
step() {
  local budget=$1
  shift
  local left=$((DEADLINE - SECONDS - 10))
  if ((left < 20)); then
    note "skipped (deadline): $*"
    return 124
  fi
  ((budget > left)) && budget=$left
  timeout --kill-after=10 "$budget" "$@"
}

# -- 1. machine and environment ---------------------------------------------------------------
if [[ $DEVICE == cuda ]]; then
  if ! command -v nvidia-smi >/dev/null 2>&1; then
    echo "nvidia-smi not found: this script needs an NVIDIA GPU (or GPU_BENCH_DEVICE=cpu for a dry run)" >&2
    exit 2
  fi
  step 20 nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/nvidia-smi.txt"
else
  echo "dry run on $DEVICE (no GPU), scale $SCALE" | tee "$OUT/nvidia-smi.txt"
fi

# The project's venv when there is one; else the machine's python3 with the project on
# PYTHONPATH (a GPU machine with torch and transformers but no venv; duckdb must be importable).
PY=${GPU_BENCH_PYTHON:-.venv/bin/python}
if [[ ! -x $PY ]]; then
  PY=$(command -v python3)
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
  note "no .venv: using $PY with the project on PYTHONPATH"
fi
if ! "$PY" -c "import sys, torch, transformers, duckdb, rlhf_eval; assert sys.argv[1] != 'cuda' or torch.cuda.is_available(), 'torch sees no GPU'" "$DEVICE"; then
  echo "$PY cannot import torch/transformers/duckdb/rlhf_eval with CUDA: install the project (pip install -e .) first" >&2
  exit 2
fi
"$PY" -c "import torch, transformers, duckdb; print(f'torch {torch.__version__}, transformers {transformers.__version__}, duckdb {duckdb.__version__}')" | tee -a "$OUT/nvidia-smi.txt"
CLI=("$PY" -m rlhf_eval)

# -- 2. models ---------------------------------------------------------------------------------
note "building the $SCALE reference, policy and reward model (bf16, on $DEVICE) ..."
if ! step 150 "$PY" bench/scoring_flops.py --scale "$SCALE" --device "$DEVICE" --dtype bfloat16 \
  --save-models "$WORK" >"$OUT/models.json" 2>"$OUT/models.log"; then
  tail -5 "$OUT/models.log" >&2
  echo "building the models failed or ran out of time" >&2
  exit 1
fi
du -sh "$WORK"/ref "$WORK"/run/policy "$WORK"/rm >&2

# -- 3. KL scoring against the matmul peak -----------------------------------------------------
SAMPLES=2048
[[ $DEVICE == cuda ]] || SAMPLES=64
# dtype:attention; torch-default lets SDPA use cuDNN (a plan per new shape), as before rlhf_eval/attention.py
for variant in ${GPU_BENCH_SCORING:-bfloat16:planless bfloat16:torch-default float32:planless}; do
  dtype=${variant%%:*} attention=${variant#*:} name=scoring_${variant/:/_}
  note "scoring_flops: $SCALE policy + reference, $DEVICE $dtype, attention $attention ..."
  if step 120 "$PY" bench/scoring_flops.py --device "$DEVICE" --dtype "$dtype" --samples "$SAMPLES" --attention "$attention" \
    --policy-dir "$WORK/run/policy" --ref-dir "$WORK/ref" --json >"$OUT/$name.json" 2>"$OUT/$name.log"; then
    SUMMARY+=("$("$PY" - "$OUT/$name.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
s, rt, t, p = r["seconds"], r["rates"], r["targets"], r["padding"]
print(f"scoring {r['machine']['dtype']}, attention {r['machine']['attention']}: {r['model']['parameters'] / 1e9:.2f}B params, {r['workload']['real_tokens']} tokens; "
      f"path {s['planned_path']:.2f} s (forwards {s['forwards_alone']:.2f}, KL math {s['kl_math']:.2f}, "
      f"before the kl.py change {s['kl_math_before']:.2f}); naive batching {s['naive_path'] / s['planned_path']:.2f}x; "
      f"peak {rt['peak'] / 1e12:.0f} TFLOP/s; utilisation {t['utilisation_convention']['value']:.0%} (2NT), "
      f"{t['utilisation_needed']['value']:.0%} (needed): target 40% "
      f"{'met' if t['utilisation_convention']['met'] else 'NOT met'}; padding waste seq "
      f"{p['naive']['sequence_waste']:.0%} -> {p['planned']['sequence_waste']:.0%}, rows "
      f"{p['naive']['logit_row_waste']:.0%} -> {p['planned']['logit_row_waste']:.0%}")
EOF
)")
  else
    SUMMARY+=("scoring $variant: failed or timed out (see $OUT/$name.log)")
    tail -5 "$OUT/$name.log" >&2
  fi
done

# -- 4. end-to-end eval ------------------------------------------------------------------------
note "rlhf-eval eval: $SCALE policy vs reference, $SCALE reward model, 64 prompts x 4 samples, 64 new tokens ..."
TIMER=()
[[ -x /usr/bin/time ]] && TIMER=(/usr/bin/time -v -o "$OUT/eval_time.txt")
# the evaluation's arguments (step 5 runs the same one with --backend vllm); the summary rows go to eval.json
EVAL_ARGS=("$WORK/run/policy" --run gpu --ref "$WORK/ref" --suite "$WORK/prompts.jsonl" --proxy "$WORK/rm"
  --gold "$WORK/gold.py:score" --samples 4 --max-new-tokens 64 --no-progress --no-analysis --json)
EVAL_SECONDS=
started=$SECONDS
if step 150 "${TIMER[@]}" "${CLI[@]}" eval "${EVAL_ARGS[@]}" --db "$WORK/gpu.duckdb" >"$OUT/eval.json" 2>"$OUT/eval.log"; then
  EVAL_SECONDS=$((SECONDS - started))
  rss=$(awk -F': ' '/Maximum resident/ {printf "%.0f MB", $2 / 1024}' "$OUT/eval_time.txt" 2>/dev/null)
  SUMMARY+=("eval end to end: $EVAL_SECONDS s for 2 x 256 samples (load 3 fp32 $SCALE models, generate, KL, score); peak host RSS ${rss:-n/a}")
else
  SUMMARY+=("eval end to end: failed or timed out after $((SECONDS - started)) s (see $OUT/eval.log)")
  tail -5 "$OUT/eval.log" >&2
fi

# -- 4b. end to end against the naive stack, both on the GPU -------------------------------------
# GPT-2 policies of ~85M parameters (5 models: reference + 4 checkpoints), two RMs; the same
# samples re-scored by the naive code to check that KL and rewards agree.
E2E_ARGS=(--device "$DEVICE" --prompts 16 --samples 4 --max-new-tokens 48 --hidden 768 --layers 12 --heads 12
  --rm-hidden 512 --rm-layers 8 --rm-heads 8 --threads 0 --check 32)
[[ $SCALE == tiny ]] && E2E_ARGS=(--device "$DEVICE" --quick)
note "end_to_end.py ${E2E_ARGS[*]} ..."
if step 170 "$PY" bench/end_to_end.py "${E2E_ARGS[@]}" --json >"$OUT/end_to_end.json" 2>"$OUT/end_to_end.log"; then
  SUMMARY+=("$("$PY" - "$OUT/end_to_end.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
s, t, c, z = r["seconds"], r["targets"], r["correctness"], r["sizes"]
print(f"end to end on {r['machine']['device']}: {z['samples_total']} samples of {z['parameters']['policy'] / 1e6:.0f}M-parameter "
      f"policies; naive {s['naive']:.1f} s, rlhf-eval eval {s['rlhf_eval_cli_first']:.1f} s (command) / "
      f"{s['rlhf_eval_inprocess_first']:.1f} s (in process): {t['speedup_over_naive']['value']:.1f}x / "
      f"{t['speedup_over_naive']['inprocess']:.1f}x (target 5x {'met' if t['speedup_over_naive']['met'] else 'NOT met'}); "
      f"cached rerun {t['cached_rerun_cli']['value']:.0f}x; KL and rewards agree: {c['agree']}")
EOF
)")
else
  SUMMARY+=("end to end: failed or timed out (see $OUT/end_to_end.log)")
  tail -5 "$OUT/end_to_end.log" >&2
fi

# -- 5. vLLM -----------------------------------------------------------------------------------
# Step 4's evaluation with --backend vllm, in its own database (its samples have another
# generation key anyway). The KL stage is the same for both (teacher-forced, under the sampling
# distribution), so the two mean KLs estimate the same number from different samples.
if ! "$PY" -c "import vllm" >/dev/null 2>&1; then
  SUMMARY+=("vLLM not installed: skipped")
elif [[ $DEVICE != cuda ]]; then
  SUMMARY+=("vLLM: skipped (it needs a CUDA GPU; this is a dry run on $DEVICE)")
elif ! "${CLI[@]}" eval --help 2>/dev/null | grep -q -- "--backend"; then
  SUMMARY+=("vLLM installed, but rlhf-eval eval has no --backend option: skipped")
else
  note "rlhf-eval eval --backend vllm: step 4's evaluation, generation by vLLM ..."
  started=$SECONDS
  if step 150 "${CLI[@]}" eval "${EVAL_ARGS[@]}" --backend vllm --db "$WORK/gpu_vllm.duckdb" \
    >"$OUT/eval_vllm.json" 2>"$OUT/eval_vllm.log"; then
    SUMMARY+=("$("$PY" - "$OUT/eval.json" "$OUT/eval_vllm.json" "${EVAL_SECONDS:-}" "$((SECONDS - started))" <<'EOF'
import json, sys

def rows(path):
    try:
        return {str(r.get("checkpoint")): r for r in json.load(open(path)) if r.get("kl") is not None}
    except (OSError, ValueError):
        return {}

def half(r):
    low, high = r.get("kl_ci_low"), r.get("kl_ci_high")
    return (high - low) / 2 if low is not None and high is not None else None

def pm(h):
    return f" +- {h:.4f}" if h is not None else ""

hf, vl = rows(sys.argv[1]), rows(sys.argv[2])
hf_s = f"{sys.argv[3]} s" if sys.argv[3] else "n/a (step 4 failed)"
parts = []
for name in sorted(vl):
    v, t = vl[name], hf.get(name)
    if t is None:
        parts.append(f"{name}: mean KL vLLM {v['kl']:.4f} (no transformers figure); >= 0: {'yes' if v['kl'] >= 0 else 'NO'}")
        continue
    hv, ht = half(v), half(t)
    if hv is not None and ht is not None:
        close, rule = abs(v["kl"] - t["kl"]) <= hv + ht, "95% CIs overlap"
    else:
        close, rule = abs(v["kl"] - t["kl"]) <= 0.2 * max(abs(t["kl"]), 1e-9), "within 20%"
    parts.append(
        f"{name}: mean KL vLLM {v['kl']:.4f}{pm(hv)} vs transformers {t['kl']:.4f}{pm(ht)}; "
        f">= 0: {'yes' if min(v['kl'], t['kl']) >= 0 else 'NO'}; close ({rule}): {'yes' if close else 'NO'}"
    )
print(f"eval --backend vllm: {sys.argv[4]} s (engine start included) vs transformers {hf_s} (step 4's evaluation, other draws); "
      + ("; ".join(parts) if parts else "no KL rows in its output (see eval_vllm.json)"))
EOF
)")
  else
    SUMMARY+=("eval --backend vllm: failed or timed out after $((SECONDS - started)) s (see $OUT/eval_vllm.log)")
    tail -5 "$OUT/eval_vllm.log" >&2
  fi
fi

# -- 6. memory (tiny models; the host RSS with CUDA in the process) ------------------------------
if [[ ${GPU_BENCH_MEMORY:-1} == 0 ]]; then
  SUMMARY+=("memory --quick: skipped (GPU_BENCH_MEMORY=0)")
elif ((DEADLINE - SECONDS > 100)); then
  note "memory.py --quick ..."
  if step 90 "$PY" bench/memory.py --quick >"$OUT/memory.txt" 2>"$OUT/memory.log"; then
    SUMMARY+=("memory --quick: $(grep -E '^\| (peak RSS beyond|does not grow)' "$OUT/memory.txt" | tr '\n' ' ')")
  else
    SUMMARY+=("memory --quick: failed or timed out (see $OUT/memory.log)")
  fi
else
  SUMMARY+=("memory --quick: skipped (deadline)")
fi

echo
echo "== bench/gpu.sh summary ($(head -1 "$OUT/nvidia-smi.txt" 2>/dev/null), ${SECONDS} s) =="
for line in "${SUMMARY[@]}"; do
  echo "- $line"
done
echo "files: $OUT"
