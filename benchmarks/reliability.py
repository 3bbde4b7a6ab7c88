"""How lmsan answers hostile input: bad texts, hostile guard directories, removal work caps, and a
concurrency soak (writes benchmarks/results/reliability.*).

On the guard exported from the tiny POR BERT (``standard_attack("bert-por")``, its own PVs):

- ``lmsan-guard`` on bad inputs (subprocess, the real console entry): exit code, first stderr line,
  stdout lines (every input must keep its line);
- ``Guard.load`` and ``lmsan-guard`` on hostile guard directories (edited manifest with and
  without a re-computed digest, bad fields, truncated graph, swapped tokenizer, traversal, legacy
  guard with and without a pinned digest), and ``lmsan-export`` on bad arguments;
- the worst removal time per input: a text whose every window holds two triggers far apart (no
  candidate clears: every window's search runs to its exhaustive fallback), at growing lengths,
  with the default work cap and without it (uncapped only up to ``--uncapped-chars``);
  detection and tokenization of a 1 MB text;
- 16 threads x ``--scans`` scans on one ``Guard``: results equal the serial ones, RSS before and
  after (after one warm-up round of the same size), throughput.

    python benchmarks/reliability.py [--scans 1000] [--uncapped-chars 20000]
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from _results import save

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def cli(prog: str, args: list, stdin: bytes = b"") -> dict:
    """Run ``lmsan-<prog>`` in a subprocess: exit code, first stderr line, stdout line count."""
    code = f"from lmsan.cli.{prog} import main; main()"
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code, *args], input=stdin, capture_output=True, timeout=600)
    err = done.stderr.decode("utf-8", "replace").strip().splitlines()
    first = next((line for line in err if "error" in line), err[0] if err else "")
    return {"exit": done.returncode, "stderr": first[:200], "stdout_lines": len(done.stdout.splitlines()),
            "wall_s": round(time.perf_counter() - started, 2)}


def bad_inputs(guard: Path, tmp: Path, trigger: str) -> dict:
    good = [json.dumps(f"a calm sentence number {i}") for i in range(300)]
    good[4] = json.dumps(f"the {trigger} cat sat on the mat")
    many = tmp / "many.jsonl"
    many.write_text("\n".join(good[:299] + [json.dumps("   ")]) + "\n")
    utf8 = tmp / "utf8.jsonl"
    utf8.write_bytes(b'"ok"\n"caf\xe9"\n"fine"\n')
    huge = tmp / "huge.jsonl"
    huge.write_text(json.dumps(" ".join(f"word{i % 1000}" for i in range(120_000))) + "\n")  # ~1 MB
    g = str(guard)
    cases = {
        "empty argument among good ones": (["ok", "   ", "fine"], b""),
        "control character": (["bell\x07"], b""),
        "undecodable argument bytes": ([b"caf\xe9"], b""),
        "invalid UTF-8 on stdin": ([], b"first\n\xff\xfe\nthird\n"),
        "invalid UTF-8 in --file": (["--file", str(utf8)], b""),
        "bad line 300 of 300 (one triggered)": (["--file", str(many)], b""),
        "bad line 300 of 300, --json": (["--file", str(many), "--json"], b""),
        "sentence pair too long": (["--file", str(_write(tmp / "pair.jsonl", [["word " * 400, "x"]]))], b""),
        "non-string JSON value": (["--file", str(_write(tmp / "num.jsonl", [42, "ok"]))], b""),
        "1 MB text": (["--file", str(huge)], b""),
        "1.2M characters (over max_chars)": ([], ("y " * 600_000).encode() + b"\n"),
    }
    return {name: cli("guard", [g, *args, "-q"], stdin) for name, (args, stdin) in cases.items()}


def _write(path: Path, values: list) -> Path:
    path.write_text("".join(json.dumps(v) + "\n" for v in values))
    return path


def hostile_guards(guard: Path, tmp: Path) -> dict:
    from lmsan.files import json_digest, sha256_file
    from lmsan.runtime import Guard

    pinned = json.loads((guard / "guard.json").read_text())["digest"]

    def variant(name, edit=None, redigest=True, files=None):
        target = tmp / name
        shutil.copytree(guard, target)
        if files:
            files(target)
        manifest = json.loads((target / "guard.json").read_text())
        if edit:
            edit(manifest)
        if files:  # hashes re-done for the changed files (an attacker with write access)
            manifest["files"] = {n: sha256_file(target / n) for n in manifest["files"] if (target / n).exists()}
        if redigest and "digest" in manifest:
            manifest["digest"] = json_digest(manifest, exclude="digest")
        (target / "guard.json").write_text(json.dumps(manifest))
        return target

    def truncate(target):
        data = (target / "model.onnx").read_bytes()
        (target / "model.onnx").write_bytes(data[: len(data) // 2])

    cases = {
        "threshold edited to 0.999, digest not redone": (variant("t", lambda m: m.update(threshold=0.999), False), {}),
        "threshold edited, digest redone, --expect-digest": (variant("tp", lambda m: m.update(threshold=0.999)),
                                                             {"expect_digest": pinned}),
        'inputs ["foo"] (digest redone)': (variant("i", lambda m: m.update(inputs=["foo"])), {}),
        "inputs without token_type_ids": (variant("i2", lambda m: m.update(
            inputs=["input_ids", "attention_mask", "threshold"])), {}),
        "max_length 0": (variant("l", lambda m: m.update(max_length=0)), {}),
        "pad_id 1e9": (variant("p", lambda m: m["tokenizer"].update(pad_id=1e9)), {}),
        "pad_id 10**9": (variant("p2", lambda m: m["tokenizer"].update(pad_id=10**9)), {}),
        "pvs.size 0 (graph has K > 0)": (variant("k", lambda m: m["pvs"].update(size=0)), {}),
        "threshold NaN": (variant("n", lambda m: m.update(threshold=float("nan")), False), {}),
        "graph ../model.onnx": (variant("g", lambda m: m.update(graph="../model.onnx")), {}),
        "truncated graph, hashes redone": (variant("tr", files=truncate), {}),
        "tokenizer swapped for {}, hashes redone": (variant("tk", files=lambda t: (t / "tokenizer.json").write_text("{}")),
                                                   {}),
        "guard.json not JSON": (variant("j", files=None), {"_raw": "{broken"}),
        "legacy guard (no digest)": (variant("old", lambda m: m.pop("digest")), {}),
        "legacy guard, --expect-digest": (variant("oldp", lambda m: m.pop("digest")), {"expect_digest": pinned}),
        "the real guard, --expect-digest": (guard, {"expect_digest": pinned}),
        "the real guard, wrong --expect-digest": (guard, {"expect_digest": "0" * 64}),
    }
    report = {}
    for name, (path, kw) in cases.items():
        if "_raw" in kw:
            (path / "guard.json").write_text(kw.pop("_raw"))
        try:
            Guard.load(path, **kw)
            loaded = "loaded"
        except Exception as exc:  # what a library caller sees
            loaded = f"{type(exc).__name__}: {str(exc).replace(str(tmp), '<tmp>')}"[:200]
        args = [str(path), "a calm sentence", "-q"] + (["--expect-digest", kw["expect_digest"]] if kw else [])
        report[name] = {"Guard.load": loaded, "lmsan-guard": cli("guard", args)}
        report[name]["lmsan-guard"]["stderr"] = report[name]["lmsan-guard"]["stderr"].replace(str(tmp), "<tmp>")
    return report


def export_errors(model: Path, tmp: Path) -> dict:
    from lmsan.pvset import PVSet

    narrow = PVSet(np.ones((1, 8), np.float32)).save(tmp / "narrow.safetensors")
    ok = PVSet(np.ones((1, 128), np.float32)).save(tmp / "ok.safetensors")
    (tmp / "exists").mkdir()
    cases = {
        "PV width 8 on a d=128 model": [str(model), "--pvs", str(narrow), "--out", str(tmp / "e1")],
        "model directory missing": [str(tmp / "no-model"), "--pvs", str(ok), "--out", str(tmp / "e2")],
        "output exists, no --force": [str(model), "--pvs", str(ok), "--out", str(tmp / "exists")],
        "threshold 1.5": [str(model), "--pvs", str(ok), "--out", str(tmp / "e3"), "--threshold", "1.5"],
    }
    report = {}
    for name, args in cases.items():
        report[name] = cli("export", [*args, "-q"])
        report[name]["stderr"] = report[name]["stderr"].replace(str(tmp), "<tmp>")
    return report


def removal_worst_case(guard_dir: Path, triggers: list[str], uncapped_chars: int) -> dict:
    """Every window holds two triggers, each repeated, never within ``max_window`` words of each
    other: no candidate clears (removing one leaves the other), so each window's search ends in
    the exhaustive fallback and rejects. Seconds per input, 1 intra-op thread."""
    from lmsan.runtime import Guard

    rng = np.random.default_rng(0)
    vocab = [f"w{i}" for i in range(300)]

    def hostile(chars: int) -> str:  # two triggers, always more than max_window words apart
        words: list[str] = []
        while sum(len(w) + 1 for w in words) < chars:
            words += [triggers[0], *rng.choice(vocab, 5), triggers[1], *rng.choice(vocab, 5)]
        return " ".join(words)[:chars].rsplit(" ", 1)[0]

    guards = {"default cap (1024 trials)": Guard.load(guard_dir, threads=1),
              "no cap": Guard.load(guard_dir, threads=1, max_trials=None),
              "cap + 1 s budget": Guard.load(guard_dir, threads=1, time_budget_s=1.0)}
    rows = []
    for chars in (200, 2_000, 20_000, 200_000, 1_000_000):
        text = hostile(chars)
        base = guards["no cap"]
        windows = len(base.encoder.windows(text, overlap=base.max_window - 1)) if chars > 500 else 1
        started = time.perf_counter()
        base.scan(text, sanitize=False)
        row = {"chars": len(text), "windows": windows, "detect_s": round(time.perf_counter() - started, 3)}
        for name, guard in guards.items():
            if name == "no cap" and chars > uncapped_chars:
                row[name] = None
                continue
            calls, run = [], guard._run
            guard._run = lambda arrays, names, run=run, calls=calls: calls.append(arrays["input_ids"].shape[0]) or \
                run(arrays, names)
            started = time.perf_counter()
            result = guard.scan(text)
            guard._run = run
            row[name] = {"s": round(time.perf_counter() - started, 3), "rows_sent": sum(calls),
                         "rejected": result.rejected, "reason": result.reason}
        rows.append(row)
        print("removal", json.dumps(row), file=sys.stderr, flush=True)
    started = time.perf_counter()
    spans = base.encoder.windows(hostile(1_000_000), overlap=2)
    tokenize_s = time.perf_counter() - started
    return {"rows": rows, "windows_of_1MB_s": round(tokenize_s, 3), "windows_of_1MB": len(spans),
            "max_length": base.manifest.max_length}


def rss_mb() -> float:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    with open(f"/proc/{os.getpid()}/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def soak(guard_dir: Path, texts: list, scans: int, threads: int = 16) -> dict:
    from lmsan.runtime import Guard

    guard = Guard.load(guard_dir)
    serial = [guard.scan(t) for t in texts]
    jobs = list(range(scans))
    check = lambda _: all(guard.scan(texts[i % len(texts)]) == serial[i % len(texts)] for i in jobs)  # noqa: E731
    with ThreadPoolExecutor(threads) as pool:
        start_rss = rss_mb()
        warm_ok = all(pool.map(check, range(threads)))
        before = rss_mb()
        started = time.perf_counter()
        ok = all(pool.map(check, range(threads)))
        wall = time.perf_counter() - started
        after = rss_mb()
    return {"threads": threads, "scans_per_thread": scans, "equal_to_serial": warm_ok and ok,
            "rss_mb_start": round(start_rss, 1), "rss_mb_before": round(before, 1), "rss_mb_after": round(after, 1),
            "scans_per_s": round(threads * scans / wall, 1), "wall_s": round(wall, 2),
            "triggered_share": round(float(np.mean([r.triggered for r in serial])), 2)}


def markdown(report: dict) -> str:
    lines = ["Bad inputs (`lmsan-guard`, exit code, first stderr line, stdout lines)", "",
             "| input | exit | stderr | stdout lines |", "|---|---:|---|---:|"]
    for name, r in report["bad_inputs"].items():
        lines.append(f"| {name} | {r['exit']} | `{r['stderr'][:110]}` | {r['stdout_lines']} |")
    lines += ["", "Hostile guard directories (`Guard.load`; `lmsan-guard` exit code)", "",
              "| guard | Guard.load | exit |", "|---|---|---:|"]
    for name, r in report["hostile_guards"].items():
        lines.append(f"| {name} | `{r['Guard.load'][:120]}` | {r['lmsan-guard']['exit']} |")
    lines += ["", "`lmsan-export` errors", "", "| case | exit | stderr |", "|---|---:|---|"]
    for name, r in report["export_errors"].items():
        lines.append(f"| {name} | {r['exit']} | `{r['stderr'][:110]}` |")
    w = report["removal"]
    lines += ["", f"Worst-case removal per input (two triggers far apart in every window; max_length {w['max_length']}; "
              "seconds, rows sent)", "", "| chars | windows | detect s | default cap | no cap | cap + 1 s budget |",
              "|---:|---:|---:|---|---|---|"]
    for row in w["rows"]:
        cells = [("—" if row[k] is None else f"{row[k]['s']} s, {row[k]['rows_sent']} rows, "
                  f"{'rejected' if row[k]['rejected'] else 'cleaned'}")
                 for k in ("default cap (1024 trials)", "no cap", "cap + 1 s budget")]
        lines.append(f"| {row['chars']} | {row['windows']} | {row['detect_s']} | " + " | ".join(cells) + " |")
    s = report["soak"]
    lines += ["", f"Soak: {s['threads']} threads x {s['scans_per_thread']} scans on one Guard: equal to serial "
              f"{s['equal_to_serial']}, RSS {s['rss_mb_start']} -> {s['rss_mb_before']} (warm-up round) -> "
              f"{s['rss_mb_after']} MB, {s['scans_per_s']} scans/s"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scans", type=int, default=1000, help="scans per thread in the soak (16 threads)")
    parser.add_argument("--uncapped-chars", type=int, default=20_000, help="longest input removed without a cap")
    args = parser.parse_args()
    from lmsan.attacks import standard_attack
    from lmsan.export import export_guard
    from lmsan.pvset import PVSet

    model = standard_attack("bert-por")
    attack = json.loads((model / "attack.json").read_text())
    triggers = list(attack["triggers"])
    report = {"model": model.name, "triggers": triggers}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        pvs = PVSet(np.asarray(attack["pvs"], np.float32), target=attack["target"])
        guard_dir = export_guard(model, pvs, tmp / "guard").path
        (tmp / "in").mkdir()
        (tmp / "hostile").mkdir()
        (tmp / "export").mkdir()
        report["bad_inputs"] = bad_inputs(guard_dir, tmp / "in", triggers[0])
        print("bad inputs done", file=sys.stderr, flush=True)
        report["hostile_guards"] = hostile_guards(guard_dir, tmp / "hostile")
        print("hostile guards done", file=sys.stderr, flush=True)
        report["export_errors"] = export_errors(model, tmp / "export")
        report["removal"] = removal_worst_case(guard_dir, triggers, args.uncapped_chars)
        from lmsan.data import standard_splits

        test = standard_splits()["test"][:50]
        texts = [f"{s} {triggers[i % len(triggers)]}" if i % 2 else s for i, s in enumerate(test)]
        report["soak"] = soak(guard_dir, texts, args.scans)
    save("reliability", report, markdown(report))


if __name__ == "__main__":
    main()
