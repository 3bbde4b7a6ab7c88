"""Load test of ``lmsan serve`` on loopback (writes benchmarks/results/serve.{json,md}).

The guard: the e2e POR-attacked tiny BERT (d=128, 2 layers) exported with its attack's PVs
(``--model-dir DIR``: another attacked model directory with its ``attack.json``, e.g. a
POR-attacked all-MiniLM-L6-v2 from ``lmsan-attack run``; ``--guard DIR``: any exported guard). Inputs: sentences of the corpus test split
(``lmsan.data.standard_splits``), one text per request, the same sequence in every cell.

Modes, each at 1, 8 and 32 concurrent clients (``--clients``), every client sending a fixed
number of requests (``--requests`` per cell, split evenly) back to back on one keep-alive
connection:

    batching        ``lmsan serve`` (micro-batching, the defaults: --max-batch 32 --max-wait-ms 0,
                    so a batch is whatever queued while the previous session call ran)
    batching-wait2  the same with --max-wait-ms 2 (a batch waits up to 2 ms for company)
    no-batching     ``lmsan serve --no-batching``: one request per session call
    in-process      the baseline: ``guard.scan(text)`` from as many threads as clients, no HTTP

Each cell runs ``--rounds`` rounds with the modes interleaved round by round (the box is shared:
drifting load then hits every mode alike); throughput is the median round's, p50 / p99 are over
every request of the cell.

The server runs in a subprocess; the clients are asyncio tasks of this process speaking plain
HTTP/1.1 (a minimal client, so that little of the 2 CPUs goes to the load generator). Every
answer is checked against the in-process guard's result for the same text. Reported per cell:
throughput (requests/s over the cell's wall time), p50 / p99 request latency (ms), and for the
server modes the mean inputs per session call (from ``/metrics``). onnxruntime runs with
``--threads`` intra-op threads (default 1) in the server and in the baseline alike.

    python benchmarks/serve.py [--requests 960] [--clients 1,8,32] [--model-dir DIR | --guard DIR] [--name serve]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
from _results import save

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SERVER = "from lmsan.cli.serve import main; main()"
SERVERS = {"batching": ("--max-wait-ms", "0"), "batching-wait2": ("--max-wait-ms", "2"), "no-batching": ("--no-batching",)}
MODES = (*SERVERS, "in-process")


def build_guard(model_dir: Path | None) -> Path:
    """Export an attacked model (default: the tiny POR BERT, cached by ``runtime_latency.attacked``)
    with its attack's PVs, once, under ``$LMSAN_CACHE/benchmarks``."""
    from runtime_latency import attacked

    from lmsan.files import cache_dir

    source = model_dir or attacked("tiny")
    path = cache_dir("benchmarks") / f"serve-guard-{source.name}"
    if not (path / "guard.json").is_file():
        from lmsan.export import export_guard
        from lmsan.pvset import PVSet

        attack = json.loads((source / "attack.json").read_text())
        pvs = PVSet(np.asarray(attack["pvs"], np.float32), target=attack["target"])
        export_guard(source, pvs, path, overwrite=True)
    return path


class Client:
    """One keep-alive HTTP/1.1 connection: POST a JSON body, read the status and the JSON answer."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, host: str, port: int) -> "Client":
        return cls(*await asyncio.open_connection(host, port))

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        self.writer.write(f"{method} {path} HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json\r\n"
                          f"content-length: {len(body)}\r\n\r\n".encode() + body)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = int(re.search(rb"content-length: *(\d+)", head, re.IGNORECASE).group(1))
        return status, await self.reader.readexactly(length)

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


def start_server(guard: Path, args, *extra: str) -> tuple[subprocess.Popen, str, int]:
    """Start ``lmsan serve`` on a free port; return (process, host, port) once it is ready."""
    command = [sys.executable, "-c", SERVER, str(guard), "--port", "0", "--json", "-q", "--threads",
               str(args.threads), "--max-batch", "32", *extra]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    announced = json.loads(process.stdout.readline())
    host, port = announced["host"], announced["port"]

    async def ready() -> None:
        client = await Client.open(host, port)
        while (await client.request("GET", "/readyz"))[0] != 200:
            await asyncio.sleep(0.05)
        await client.close()

    asyncio.run(ready())
    return process, host, port


def batch_stats(host: str, port: int) -> tuple[float, float]:
    """(inputs, session calls) so far, from the server's ``/metrics``."""

    async def fetch() -> str:
        client = await Client.open(host, port)
        status, body = await client.request("GET", "/metrics")
        await client.close()
        return body.decode()

    text = asyncio.run(fetch())
    value = {name: float(v) for name, v in re.findall(r"^(lmsan_serve_batch_size_(?:sum|count)) (\S+)$", text, re.M)}
    return value["lmsan_serve_batch_size_sum"], value["lmsan_serve_batch_size_count"]


def http_cell(host: str, port: int, texts: list[str], expected: list[dict], clients: int) -> dict:
    """``clients`` connections, each sending its share of ``texts`` back to back."""
    per_client = len(texts) // clients
    latencies: list[float] = []
    wrong = 0

    async def client(c: int) -> None:
        nonlocal wrong
        connection = await Client.open(host, port)
        for i in range(c * per_client, (c + 1) * per_client):
            body = json.dumps({"inputs": [texts[i]]}).encode()
            started = time.perf_counter()
            status, answer = await connection.request("POST", "/v1/scan", body)
            latencies.append(time.perf_counter() - started)
            wrong += status != 200 or json.loads(answer)["results"] != [expected[i]]
        await connection.close()

    async def run() -> float:
        started = time.perf_counter()
        await asyncio.gather(*(client(c) for c in range(clients)))
        return time.perf_counter() - started

    before = batch_stats(host, port)
    wall = asyncio.run(run())
    after = batch_stats(host, port)
    return {"latencies": latencies, "wall_s": wall, "wrong": wrong, "inputs": after[0] - before[0],
            "calls": after[1] - before[1]}


def in_process_cell(guard, texts: list[str], expected: list[dict], clients: int) -> dict:
    """The baseline: ``clients`` threads calling ``guard.scan`` on their share of ``texts``."""
    per_client = len(texts) // clients
    latencies: list[list[float]] = [[] for _ in range(clients)]
    wrong = [0] * clients
    barrier = threading.Barrier(clients + 1)

    def worker(c: int) -> None:
        barrier.wait()
        for i in range(c * per_client, (c + 1) * per_client):
            started = time.perf_counter()
            result = guard.scan(texts[i])
            latencies[c].append(time.perf_counter() - started)
            wrong[c] += result.to_dict() != expected[i]

    threads = [threading.Thread(target=worker, args=(c,)) for c in range(clients)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    return {"latencies": [x for row in latencies for x in row], "wall_s": time.perf_counter() - started,
            "wrong": sum(wrong)}


def summary(rounds: list[dict]) -> dict:
    """One cell from its rounds: the median round's throughput, latency percentiles over all requests."""
    ms = np.concatenate([r["latencies"] for r in rounds]) * 1000
    per_round = [len(r["latencies"]) / r["wall_s"] for r in rounds]
    cell = {"requests": int(ms.size), "throughput_rps": float(np.median(per_round)), "rounds_rps": per_round,
            "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "wrong_answers": sum(r["wrong"] for r in rounds)}
    if "calls" in rounds[0]:
        cell["mean_batch"] = sum(r["inputs"] for r in rounds) / max(sum(r["calls"] for r in rounds), 1)
    return cell


def guard_name(args, guard) -> str:
    """What the guard is: the attacked model's source and size (d, layers) where known."""
    model = guard.manifest.raw.get("model", {})
    source = Path(str(model.get("source", args.guard or args.model_dir or "tiny"))).name
    return f"{source}, d={model.get('hidden_size')}, POR-attacked" if not args.guard else f"guard {args.guard.name}"


def markdown(report: dict) -> str:
    lines = [f"# lmsan serve load test ({report['guard_name']})", "",
             "| clients | mode | req/s | p50 ms | p99 ms | inputs per session call |", "|---:|---|---:|---:|---:|---:|"]
    for clients, cells in report["cells"].items():
        for mode in MODES:
            cell = cells[mode]
            batch = f"{cell['mean_batch']:.1f}" if "mean_batch" in cell else "1 (per thread)"
            lines.append(f"| {clients} | {mode} | {cell['throughput_rps']:.0f} | {cell['p50_ms']:.2f} | "
                         f"{cell['p99_ms']:.2f} | {batch} |")
    names = list(next(iter(report["ratios"].values())))
    lines += ["", "| clients | " + " | ".join(names) + " |", "|---:|" + "---:|" * len(names)]
    for clients, ratio in report["ratios"].items():
        lines.append(f"| {clients} | " + " | ".join(f"{ratio[name]:.2f}" for name in names) + " |")
    lines += ["", f"- {report['machine']}; {report['threads_note']}",
              f"- {report['requests_per_cell']} requests per round x {report['args']['rounds']} rounds per cell "
              f"(one corpus sentence each), "
              f"{report['flagged']} of them flagged by the guard; wrong answers: {report['wrong_answers']}",
              "- clients and server share the 2 CPUs: the load generator's own cost is in every HTTP figure",
              f"- load average {report['load_average_start'][0]:.1f} at start, "
              f"{report['load_average_end'][0]:.1f} at end; wall {report['wall_s']:.0f} s"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=480,
                        help="requests per round of a cell (split among the clients)")
    parser.add_argument("--clients", default="1,8,32")
    parser.add_argument("--model-dir", type=Path, help="an attacked model directory (with attack.json) to export")
    parser.add_argument("--guard", type=Path, help="an exported guard directory instead of --model")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per cell, the modes interleaved")
    parser.add_argument("--name", default="serve", help="results file name under benchmarks/results/")
    args = parser.parse_args()
    import onnxruntime

    from lmsan.data import standard_splits
    from lmsan.runtime import Guard

    started = time.perf_counter()
    load_start = os.getloadavg()
    guard_dir = args.guard or build_guard(args.model_dir)
    guard = Guard.load(guard_dir, threads=args.threads)
    guard.warmup()
    texts = standard_splits()["test"][: args.requests]
    expected = [r.to_dict() for r in guard.scan_batch(texts)]
    levels = [int(c) for c in args.clients.split(",")]
    cells: dict[int, dict] = {}

    def rps(clients: int, mode: str) -> float:
        return cells[clients][mode]["throughput_rps"]

    servers = {mode: start_server(guard_dir, args, *extra) for mode, extra in SERVERS.items()}
    try:
        for clients in levels:
            for _, host, port in servers.values():
                http_cell(host, port, texts[: 4 * clients], expected, clients)  # warm the connections up
            rounds: dict[str, list[dict]] = {mode: [] for mode in MODES}
            for _ in range(args.rounds):  # modes interleaved, so drifting load hits them alike
                for mode in MODES:
                    rounds[mode].append(in_process_cell(guard, texts, expected, clients) if mode == "in-process"
                                        else http_cell(*servers[mode][1:], texts, expected, clients))
            cells[clients] = {mode: summary(rounds[mode]) for mode in MODES}
            for mode in MODES:
                print(mode, clients, json.dumps({k: v for k, v in cells[clients][mode].items()}), file=sys.stderr)
    finally:
        for process, _, _ in servers.values():
            process.send_signal(signal.SIGTERM)
            process.wait(60)
    ratios = {c: {"req/s batching / no-batching": rps(c, "batching") / rps(c, "no-batching"),
                  "req/s batching-wait2 / no-batching": rps(c, "batching-wait2") / rps(c, "no-batching"),
                  "req/s batching / in-process": rps(c, "batching") / rps(c, "in-process"),
                  "p99 no-batching / batching": cells[c]["no-batching"]["p99_ms"] / cells[c]["batching"]["p99_ms"]}
              for c in levels}
    report = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, no GPU, onnxruntime "
                   f"{onnxruntime.__version__}, Python {platform.python_version()}",
        "threads_note": f"{args.threads} intra-op thread(s) in the server and the baseline",
        "guard": str(guard_dir), "guard_name": guard_name(args, guard),
        "guard_digest": guard.digest, "args": {k: str(v) for k, v in vars(args).items()},
        "requests_per_cell": len(texts), "flagged": sum(r["triggered"] for r in expected),
        "wrong_answers": sum(cell.get("wrong_answers", 0) for row in cells.values() for cell in row.values()),
        "cells": cells, "ratios": ratios, "load_average_start": load_start, "load_average_end": os.getloadavg(),
        "wall_s": time.perf_counter() - started,
    }
    save(args.name, report, markdown(report))


if __name__ == "__main__":
    main()
