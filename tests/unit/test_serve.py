"""``lmsan serve`` over real HTTP on loopback: results equal the in-process guard's, requests are
merged, overload gets 429, not-ready gets 503, bad requests a 4xx with a clear error, metrics parse
as Prometheus text, shutdown finishes in-flight requests; the CLI's exit codes and env config."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager

import httpx
import pytest
from test_export_guard import ANCHOR, tiny_guard

from lmsan.cli import serve as serve_cli
from lmsan.runtime import Guard
from lmsan.serve import ServeConfig
from lmsan.serve.app import build_app
from lmsan.serve.server import make_server

THRESHOLD = 0.95
TEXTS = [ANCHOR, "a calm sentence about the weather", ("is it raining?", "no, it is sunny."),
         "the quick brown fox jumps over the lazy dog again", "stocks rose sharply on monday",
         ("who won?", "the home team"), "quick brown fox the lazy dog jumps over", "hello there"]


@pytest.fixture(scope="module")
def guard() -> Guard:
    return Guard.load(tiny_guard(), threshold=THRESHOLD)


@contextmanager
def serving(guard, **config):
    """Run the app under uvicorn in a thread on a free loopback port; yield (base url, server)."""
    config = ServeConfig(port=0, **config)
    server = make_server(build_app(guard, config), config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.started
    try:
        yield f"http://127.0.0.1:{server.address[1]}", server
    finally:
        server.should_exit = True
        thread.join(10)
        assert not thread.is_alive()


def wait_ready(url: str) -> None:
    deadline = time.monotonic() + 10
    while httpx.get(f"{url}/readyz").status_code != 200:
        assert time.monotonic() < deadline, "never ready"
        time.sleep(0.01)


class Gated:
    """The real guard, with ``scan_batch`` and ``warmup`` each held until its event is set."""

    def __init__(self, guard: Guard, *, hold_scan: bool = False, hold_warmup: bool = False) -> None:
        self._guard = guard
        self.scan_gate, self.warm_gate, self.entered = threading.Event(), threading.Event(), threading.Event()
        if not hold_scan:
            self.scan_gate.set()
        if not hold_warmup:
            self.warm_gate.set()

    def scan_batch(self, values, *, sanitize=True):
        self.entered.set()
        assert self.scan_gate.wait(10)
        return self._guard.scan_batch(values, sanitize=sanitize)

    def warmup(self):
        assert self.warm_gate.wait(10)
        return self._guard.warmup()

    def __getattr__(self, name):
        return getattr(self._guard, name)


@pytest.fixture(scope="module")
def server(guard):
    with serving(guard, max_batch=16, max_wait_ms=50, max_items=8, max_body_bytes=4096) as (url, _):
        wait_ready(url)
        yield url


def scan(url: str, inputs, **extra) -> httpx.Response:
    return httpx.post(f"{url}/v1/scan", json={"inputs": [list(v) if isinstance(v, tuple) else v for v in inputs]}
                      | extra, timeout=10)


SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{((?:[a-zA-Z_]\w*="(?:[^"\\\n]|\\.)*",?)*)\})? '
                    r'(-?\d+(?:\.\d+)?(?:e[-+]?\d+)?|\+Inf|NaN)$')


def parse_metrics(text: str) -> dict[tuple[str, tuple], float]:
    """Parse Prometheus text format strictly: every sample belongs to a family declared by
    ``# TYPE`` first; histogram buckets are cumulative and ``+Inf`` equals ``_count``."""
    types, samples = {}, {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("counter", "gauge", "histogram") and name not in types, line
            types[name] = kind
            continue
        match = SAMPLE.match(line)
        assert match, f"not a sample line: {line!r}"
        name, labels, value = match.groups()
        family = re.sub(r"_(bucket|sum|count)$", "", name) if name not in types else name
        assert family in types, f"{name} has no # TYPE"
        assert types[family] != "counter" or name.endswith("_total"), name
        samples[(name, tuple(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', labels or "")))] = float(value)
    for family in (name for name, kind in types.items() if kind == "histogram"):
        buckets = [(labels[0][1], v) for (name, labels), v in samples.items() if name == f"{family}_bucket"]
        counts = [v for _, v in buckets]
        assert counts == sorted(counts) and buckets[-1][0] == "+Inf"
        assert buckets[-1][1] == samples[(f"{family}_count", ())]
    return samples


def metrics(url: str) -> dict[tuple[str, tuple], float]:
    response = httpx.get(f"{url}/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse_metrics(response.text)


def test_concurrent_clients_get_the_in_process_results_in_merged_batches(server, guard):
    requests = [[TEXTS[(i + j) % len(TEXTS)] for j in range(1 + i % 3)] for i in range(16)]
    before = metrics(server)
    barrier, answers = threading.Barrier(len(requests)), [None] * len(requests)

    def client(i: int) -> None:
        barrier.wait()
        answers[i] = scan(server, requests[i])

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers if a.status_code != 200]
    for inputs, answer in zip(requests, answers):
        assert answer.json() == {"results": [r.to_dict() for r in guard.scan_batch(inputs)], "guard": guard.digest}
    assert any(r["triggered"] for a in answers for r in a.json()["results"])
    assert not all(r["triggered"] for a in answers for r in a.json()["results"])
    after = metrics(server)
    size = "lmsan_serve_batch_size"
    calls = after[(f"{size}_count", ())] - before[(f"{size}_count", ())]
    singles = after[(f"{size}_bucket", (("le", "1.0"),))] - before[(f"{size}_bucket", (("le", "1.0"),))]
    scanned = sum(map(len, requests))
    assert after[(f"{size}_sum", ())] - before[(f"{size}_sum", ())] == scanned
    assert calls < len(requests) and singles < calls  # requests were merged: some call held several
    key = ("lmsan_serve_requests_total", (("path", "/v1/scan"), ("code", "200")))
    assert after[key] - before.get(key, 0) == len(requests)
    triggered = sum(r["triggered"] for a in answers for r in a.json()["results"])
    assert after[("lmsan_serve_triggered_total", ())] - before[("lmsan_serve_triggered_total", ())] == triggered
    assert after[("lmsan_serve_inputs_total", ())] - before[("lmsan_serve_inputs_total", ())] == scanned


def test_sanitize_false_and_info(server, guard):
    answer = scan(server, [ANCHOR], sanitize=False)
    assert answer.json()["results"] == [guard.scan(ANCHOR, sanitize=False).to_dict()]
    info = httpx.get(f"{server}/v1/info").json()
    assert info["guard"] == guard.digest and info["labels"] is None and info["task"] is None
    assert info["threshold"] == pytest.approx(THRESHOLD) and info["serving"]["max_items"] == 8
    assert info["pv_thresholds"] is None  # not calibrated
    assert httpx.get(f"{server}/healthz").json() == {"status": "ok"}


@pytest.mark.parametrize("body, status, message", [
    (b"{not json", 400, "body is not valid JSON"),
    (b"[1, 2]", 400, "body must be a JSON object, got a list"),
    (b"{}", 400, 'missing field "inputs"'),
    (b'{"inputs": "one text"}', 400, '"inputs" must be a list, got a string'),
    (b'{"inputs": []}', 400, '"inputs" is empty'),
    (b'{"inputs": ["ok", 3]}', 400, "inputs[1]: expected a str or a (str, str) pair, got int"),
    (b'{"inputs": ["ok"], "sanitize": "yes"}', 400, '"sanitize" must be true or false, got a string'),
    (b'{"inputs": ["ok"], "texts": []}', 400, "unknown field(s) 'texts'"),
    (b'{"inputs": ["ok", "  "]}', 422, "inputs[1]: empty or whitespace-only text"),
    (b'{"inputs": ["bad \\u0000 byte"]}', 422, "inputs[0]: control character U+0000"),
    (json.dumps({"inputs": ["x"] * 9}).encode(), 413, "9 inputs exceed the limit of 8 per request"),
    (json.dumps({"inputs": ["word " * 1000]}).encode(), 413, "exceeds the limit of 4096"),
])
def test_bad_requests_get_a_4xx_with_a_clear_error(server, body, status, message):
    answer = httpx.post(f"{server}/v1/scan", content=body, headers={"content-type": "application/json"})
    assert answer.status_code == status and message in answer.json()["error"], answer.text


def test_a_chunked_body_over_the_limit_and_unknown_routes(server):
    chunks = (b"x" * 1024 for _ in range(8))  # no content-length: the limit applies while reading
    answer = httpx.post(f"{server}/v1/scan", content=chunks)
    assert answer.status_code == 413 and answer.json() == {"error": "body exceeds the limit of 4096 bytes"}
    assert httpx.get(f"{server}/v1/scan").json() == {"error": "Method Not Allowed: GET /v1/scan"}
    assert httpx.get(f"{server}/nowhere").status_code == 404


def test_an_input_the_encoder_refuses_fails_only_its_own_request(server, guard):
    """A pair too long for the model passes the request checks and fails inside the merged batch:
    its request gets 422, the one merged with it is still answered."""
    long_pair = ["word " * 30, "word " * 30]
    barrier, answers = threading.Barrier(2), {}

    def client(name, inputs):
        barrier.wait()
        answers[name] = scan(server, inputs)

    threads = [threading.Thread(target=client, args=("bad", ["fine", long_pair])),
               threading.Thread(target=client, args=("good", [ANCHOR, "calm"]))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert answers["bad"].status_code == 422
    assert answers["bad"].json()["error"].startswith("inputs[1]: sentence pair of")
    assert answers["good"].json()["results"] == [r.to_dict() for r in guard.scan_batch([ANCHOR, "calm"])]


def test_overload_answers_429_with_retry_after(guard):
    gated = Gated(guard, hold_scan=True)
    with serving(gated, max_batch=1, max_wait_ms=0, max_queue=2, max_items=2) as (url, _):
        wait_ready(url)
        answers = {}
        first = threading.Thread(target=lambda: answers.setdefault("first", scan(url, ["one"])))
        first.start()
        assert gated.entered.wait(10)  # the worker holds "one"
        second = threading.Thread(target=lambda: answers.setdefault("second", scan(url, ["two", "three"])))
        second.start()
        deadline = time.monotonic() + 10
        while metrics(url)[("lmsan_serve_queued_inputs", ())] < 2:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        refused = scan(url, ["four"])
        assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
        assert refused.json()["error"].startswith("overloaded: queue full (2 of 2 inputs waiting)")
        gated.scan_gate.set()
        first.join(10)
        second.join(10)
        assert answers["first"].status_code == answers["second"].status_code == 200
        assert answers["second"].json()["results"] == [r.to_dict() for r in guard.scan_batch(["two", "three"])]
        assert metrics(url)[("lmsan_serve_refused_total", (("reason", "queue_full"),))] == 1


def test_not_ready_answers_503_until_warmed_up(guard):
    gated = Gated(guard, hold_warmup=True)
    with serving(gated) as (url, _):
        assert httpx.get(f"{url}/healthz").status_code == 200
        ready = httpx.get(f"{url}/readyz")
        assert ready.status_code == 503 and ready.json()["error"] == "not ready: warming up"
        refused = scan(url, ["hello"])
        assert refused.status_code == 503 and refused.json() == {"error": "not ready: warming up"}
        gated.warm_gate.set()
        wait_ready(url)
        assert scan(url, ["hello"]).status_code == 200


def test_graceful_shutdown_finishes_the_in_flight_request(guard):
    gated = Gated(guard, hold_scan=True)
    answers = {}
    with serving(gated) as (url, server):
        wait_ready(url)
        client = threading.Thread(target=lambda: answers.setdefault("in flight", scan(url, [ANCHOR])))
        client.start()
        assert gated.entered.wait(10)
        server.should_exit = True  # what SIGTERM does
        time.sleep(0.3)
        with pytest.raises(httpx.ConnectError):  # no new connections while draining
            httpx.get(f"{url}/healthz", timeout=2)
        gated.scan_gate.set()
        client.join(10)
    answer = answers["in flight"]
    assert answer.status_code == 200 and answer.json()["results"] == [guard.scan(ANCHOR).to_dict()]


def _run(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        serve_cli.main(argv)
    out = capsys.readouterr()
    return exit_info.value.code, out.out, out.err


def test_cli_bad_guard_dir_is_one_error_line_and_exit_2(tmp_path, capsys):
    code, out, err = _run([str(tmp_path), "--port", "0"], capsys)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith("lmsan-serve: error: ")


def test_cli_bad_settings_from_flags_or_environment_exit_4(capsys, monkeypatch):
    code, _, err = _run([str(tiny_guard()), "--max-items", "9", "--max-queue", "4"], capsys)
    assert code == 4 and "max_items (9) must be <= max_queue (4)" in err
    monkeypatch.setenv("LMSAN_SERVE_MAX_BATCH", "0")
    code, _, err = _run([str(tiny_guard())], capsys)
    assert code == 4 and "--max-batch" in err and len(err.strip().splitlines()) == 1


def test_cli_serves_with_env_config_without_torch_and_exits_0_on_sigterm():
    code = ("import sys\nfrom lmsan.cli.serve import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit as exc:\n"
            "    assert not {'torch', 'transformers'} & set(sys.modules)\n    raise\n")
    env = os.environ | {"LMSAN_SERVE_PORT": "0", "LMSAN_SERVE_MAX_ITEMS": "2", "LMSAN_SERVE_THRESHOLD": "0.95"}
    process = subprocess.Popen([sys.executable, "-c", code, str(tiny_guard()), "--json", "-q"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        announced = json.loads(process.stdout.readline())
        url = announced["url"]
        assert announced["config"]["max_items"] == 2 and announced["port"] > 0
        wait_ready(url)
        assert scan(url, ["a", "b", "c"]).status_code == 413
        assert scan(url, [ANCHOR]).json()["results"][0]["triggered"]
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert err == ""
