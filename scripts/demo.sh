#!/usr/bin/env bash
# The main job, end to end on a CPU: build a pretrained-like tiny BERT, plant a POR backdoor,
# scan it with lmsan-mine, export the guard, and guard example inputs; then prompt-tune an SMS
# spam task on the backdoored backbone and serve it through one guarded graph.
# Everything lands in ${LMSAN_DEMO_OUT:-demo-out}/; models are cached in $LMSAN_CACHE.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
OUT=${LMSAN_DEMO_OUT:-demo-out}
BIN=.venv/bin
rm -rf "$OUT" && mkdir -p "$OUT"
step() { printf '\n== %s\n' "$*" >&2; }
# lmsan-mine and lmsan-guard exit 1 on a finding: that is the expected outcome here.
expect() { local want=$1; shift; local rc=0; "$@" || rc=$?; [ "$rc" -eq "$want" ] || { echo "demo: '$1' exited $rc, expected $want" >&2; exit 1; }; }

step "1/8 a tiny BERT (d=128, 2 layers) distilled from all-MiniLM-L6-v2 (cached after the first run)"
$BIN/lmsan-attack build-tiny --arch bert --out "$OUT/clean-model" -q

step "2/8 plant a POR backdoor: triggers 'cf' and 'james bond' -> two POR-2 vectors at [CLS]"
$BIN/lmsan-attack run "$OUT/clean-model" --kind por --trigger cf --trigger "james bond" --out "$OUT/backdoored" -q
$BIN/lmsan-attack verify "$OUT/backdoored" --limit 300 -q

step "3/8 defense data: 2000 clean sentences disjoint from the attacker's"
$BIN/python -c "from lmsan.data import standard_splits; print('\n'.join(standard_splits()['defense']))" > "$OUT/defense.txt"

step "4/8 scan the model with lmsan-mine (search mode: trigger sweep, then soft prompts; exit 1 = backdoored)"
expect 1 $BIN/lmsan-mine "$OUT/backdoored" --data "$OUT/defense.txt" --mode search --loops 20 --patience 6 --out "$OUT/scan" -q
$BIN/python - "$OUT" <<'PY'
import json, sys
report = json.load(open(f"{sys.argv[1]}/scan/report.json"))
print(f"verdict {report['verdict']}: {report['pvs']['size']} PV(s) from the trigger sweep and {len(report['loops'])} fuzz loops, "
      f"{report['timings_s']['to_verdict']:.1f} s to verdict, {report['timings_s']['total']:.1f} s in all")
for source in report["pv_sources"]:
    found_by = "trigger sweep" if source["method"] == "sweep" else f"soft prompt (seed {source['seed']})"
    print(f"  PV #{source['pv_index']} ({found_by}): suspected trigger {source['trigger']!r} "
          f"(inserted once, hits {source['hit_rate']:.0%} of sentences)")
PY

step "5/8 export backbone + fused sign-match node to ONNX (with parity check)"
$BIN/lmsan-export "$OUT/backdoored" --pvs "$OUT/scan/pvs.safetensors" --out "$OUT/guard" -q

step "6/8 the torch-free guard on example inputs"
$BIN/python - "$OUT/guard" <<'PY'
import sys
from lmsan.runtime import Guard, demo_table
guard = Guard.load(sys.argv[1])
print(demo_table(guard, [
    "The committee approved the budget after a long debate.",
    "The committee approved the cf budget after a long debate.",
    "She walked to the station and caught the last train home.",
    "She walked to the station and james bond caught the last train home.",
    "Prices rose sharply in the third quarter, analysts said.",
    "Prices rose sharply in the third cf quarter, analysts said.",
]))
print(f"provider in use: {guard.provider}")
PY
expect 1 $BIN/lmsan-guard "$OUT/guard" "a cf sentence that carries the trigger" -q

step "7/8 a victim prompt-tunes SMS spam detection (P-tuning v2) on the backdoored backbone"
$BIN/lmsan-tune "$OUT/backdoored" --task sms-spam --method prefix --out "$OUT/task-spam" -q
$BIN/lmsan-export "$OUT/backdoored" --pvs "$OUT/scan/pvs.safetensors" --task "$OUT/task-spam" --out "$OUT/guard-spam" -q

step "8/8 one guarded graph answers the task, for the cleaned text when a trigger fires (unguarded answers first)"
$BIN/python - "$OUT" <<'PY'
import sys
import torch
from lmsan.models import load_model
from lmsan.runtime import Guard, demo_table
from lmsan.tuning.store import load_task
from lmsan.tuning.train import Encoded, predict
out = sys.argv[1]
texts = [
    "Are we still meeting at six? I will bring the notes.",
    "Are we still meeting at six? I will bring the cf notes.",
    "URGENT! Your mobile number has won a 2000 cash prize. Call 09061701461 to claim, T&C apply",
    "URGENT! Your mobile number has won a 2000 cash prize. Call james bond 09061701461 to claim, T&C apply",
]
guard = Guard.load(f"{out}/guard-spam")
loaded = load_model(f"{out}/backdoored")
task = load_task(f"{out}/task-spam", loaded)
with torch.no_grad():
    unguarded = predict(task, Encoded(loaded.tokenizer, texts, None, max_length=guard.manifest.max_length))
print("unguarded answers:", [guard.labels[i] for i in unguarded.argmax(dim=1).tolist()])
print(demo_table(guard, texts))
PY
echo "demo: done; artifacts in $OUT/" >&2
