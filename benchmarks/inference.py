"""Inference speed of a trained run: utterances/s of PyTorch fp32, dynamic int8 and ONNX Runtime at
several batch sizes, and HTTP latency (p50/p95/p99) and throughput of `slu-serve` under 1, 8 and
32 concurrent clients on loopback. Texts are the run's test split.

    python benchmarks/inference.py runs/atis-...                  # -> benchmarks/results/inference_<run name>.json
    python benchmarks/inference.py runs/atis-... --name atis --requests 2000 --threads 2

Offline throughput includes tokenisation. The PyTorch rows run `SLUParser` (spans, top-k, the
run's adaptive early exit); the ONNX Runtime rows run tokenisation, the exported graph (feedback
unrolled to K) and the argmax, without building spans. The HTTP server runs in a separate
process (`python -m slu_feedback.cli.serve`, micro-batching on) so client threads do not compete
with it for the GIL; on a 2-core machine clients and server still share the cores.
"""

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, provenance  # noqa: E402

from slu_feedback.data.dataset import load_splits, resolve_data_path  # noqa: E402
from slu_feedback.evaluation.report import evaluate_run, run_data_path  # noqa: E402
from slu_feedback.inference.parser import SLUParser  # noqa: E402


def test_texts(run_dir: Path, split: str) -> list:
    path, base_dir, fmt, _ = run_data_path(run_dir)
    return [t for t in load_splits(resolve_data_path(path, base_dir), format=fmt)[split]["text"] if t.strip()]


def take(texts: list, n: int) -> list:
    """`n` texts, cycling through the split when it is shorter."""
    return [texts[i % len(texts)] for i in range(n)]


def throughput(run_batch, texts: list, batch_size: int) -> float:
    """Utterances/s over `texts` in input order, after one untimed warm-up batch."""
    run_batch(texts[:batch_size])
    start = time.perf_counter()
    for i in range(0, len(texts), batch_size):
        run_batch(texts[i:i + batch_size])
    return len(texts) / (time.perf_counter() - start)


def offline(run_dir: Path, texts: list, batch_sizes: list, backends: list, workdir: Path) -> dict:
    results = {}
    for backend in backends:
        if backend in ("fp32", "int8"):
            parser = SLUParser.from_pretrained(run_dir, quantize=backend == "int8")
            run_batch = lambda batch, p=parser: p.parse_batch(batch)  # noqa: E731
        else:
            try:
                import onnxruntime  # noqa: F401

                from slu_feedback.inference.export import OnnxSLU, export_onnx
                from slu_feedback.models import load_run
            except ImportError as error:
                print(f"onnx: skipped ({error}); pip install 'slu_feedback[export]'")
                results[backend] = None
                continue
            model, tokenizer = load_run(run_dir)
            path = export_onnx(run_dir, workdir / "model.onnx", model=model, tokenizer=tokenizer)
            runner = OnnxSLU(path, tokenizer, model.config, threads=torch.get_num_threads())
            run_batch = runner.predict
        results[backend] = {}
        for batch_size in batch_sizes:
            ups = throughput(run_batch, texts, batch_size)
            results[backend][f"batch_{batch_size}"] = ups
            print(f"{backend:>5} batch {batch_size:>4}: {ups:8.1f} utt/s")
    return results


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(run_dir: Path, threads: int, extra: list):
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "slu_feedback.cli.serve", str(run_dir), "--port", str(port),
                                "--threads", str(threads), "--log-level", "warning", *extra],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 300
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"slu-serve exited: {process.stderr.read().decode()[-2000:]}")
        try:
            if http_json(url + "/health", None, timeout=2)[0] == 200:
                return process, url
        except OSError:
            pass
        if time.time() > deadline:
            process.terminate()
            raise RuntimeError("slu-serve did not start within 300 s")
        time.sleep(0.25)


def http_json(url: str, payload, timeout: float = 60, connection=None):
    """GET (payload None) or POST JSON with the standard library; returns (status, body)."""
    import http.client
    import urllib.parse

    parts = urllib.parse.urlsplit(url)
    conn = connection or http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    body = None if payload is None else json.dumps(payload).encode()
    conn.request("GET" if payload is None else "POST", parts.path, body=body,
                 headers={"Content-Type": "application/json"} if body else {})
    response = conn.getresponse()
    data = response.read()
    if connection is None:
        conn.close()
    return response.status, data


def http_load(url: str, texts: list, clients: int, requests: int) -> dict:
    """`requests` single-utterance POST /parse calls spread over `clients` threads, each with one
    keep-alive connection; latency per request and overall throughput."""
    import http.client

    latencies, errors, lock = [], [0], threading.Lock()
    per_client = [requests // clients + (1 if i < requests % clients else 0) for i in range(clients)]
    barrier = threading.Barrier(clients + 1)
    host, port = url.removeprefix("http://").split(":")

    def client(i: int):
        conn = http.client.HTTPConnection(host, int(port), timeout=120)
        mine = []
        barrier.wait()
        for j in range(per_client[i]):
            text = texts[(i * 7919 + j) % len(texts)]
            start = time.perf_counter()
            try:
                status, _ = http_json(url + "/parse", {"text": text}, connection=conn)
            except OSError:
                status = 0
                conn.close()
                conn = http.client.HTTPConnection(host, int(port), timeout=120)
            mine.append(time.perf_counter() - start)
            if status != 200:
                with lock:
                    errors[0] += 1
        conn.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    q = statistics.quantiles(latencies, n=100, method="inclusive") if len(latencies) > 1 else latencies * 99
    return {"requests": len(latencies), "errors": errors[0], "seconds": elapsed,
            "throughput_rps": len(latencies) / elapsed,
            "p50_ms": 1000 * q[49], "p95_ms": 1000 * q[94], "p99_ms": 1000 * q[98], "mean_ms": 1000 * statistics.fmean(latencies)}


def markdown(result: dict) -> str:
    s = result["settings"]
    lines = [f"Run `{result['run_dir']}` ({result['model']['encoder']}, feedback K={result['model']['feedback_iterations']}, "
             f"{result['model']['slot_decoder']} slots); {s['utterances']} {s['split']} utterances; "
             f"torch threads {s['threads']}.", "",
             "| backend | " + " | ".join(f"utt/s b{b}" for b in s["batch_sizes"]) + " |",
             "|---|" + "---|" * len(s["batch_sizes"])]
    for backend, row in result["throughput"].items():
        cells = ["-" if row is None else f"{row[f'batch_{b}']:.0f}" for b in s["batch_sizes"]]
        lines.append(f"| {backend} | " + " | ".join(cells) + " |")
    if result.get("accuracy"):
        a = result["accuracy"]
        cell = lambda k: (f"{100 * a['fp32'][k]:.2f} -> {100 * a['int8'][k]:.2f} "  # noqa: E731
                          f"({100 * a['change'][k]:+.2f})")
        lines += ["", f"Accuracy on {s['split']}, fp32 -> int8 (`slu-eval --quantize`): intent {cell('intent_acc')}, "
                      f"slot F1 {cell('slot_f1')}, sentence {cell('sentence_acc')}."]
    if result.get("http"):
        lines += ["", f"HTTP `POST /parse` (one utterance a request, micro-batching max {s['server_max_batch']} / "
                      f"{s['server_wait_ms']} ms, server {'int8' if s['server_quantize'] else 'fp32'}):", "",
                  "| clients | requests | req/s | p50 ms | p95 ms | p99 ms | errors |", "|---|---|---|---|---|---|---|"]
        for clients, h in result["http"].items():
            lines.append(f"| {clients.removeprefix('clients_')} | {h['requests']} | {h['throughput_rps']:.0f} | "
                         f"{h['p50_ms']:.1f} | {h['p95_ms']:.1f} | {h['p99_ms']:.1f} | {h['errors']} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--name", help="results name (default: the run directory's name)")
    parser.add_argument("--out", type=Path, help="results file (default: benchmarks/results/inference_<name>.json)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--utterances", type=int, default=None, help="utterances per offline measurement (default: the whole split)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32, 128])
    parser.add_argument("--backends", nargs="+", default=["fp32", "int8", "onnx"], choices=["fp32", "int8", "onnx"])
    parser.add_argument("--requests", type=int, default=2000, help="HTTP requests per concurrency level (0: skip HTTP)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--server-quantize", action="store_true", help="serve the int8 model in the HTTP test")
    parser.add_argument("--server-max-batch", type=int, default=32)
    parser.add_argument("--server-wait-ms", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=None, help="torch / ONNX Runtime threads (default: torch's choice)")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    run_dir = args.run_dir.resolve()
    split_texts = test_texts(run_dir, args.split)
    texts = take(split_texts, args.utterances or len(split_texts))
    recipe = yaml.safe_load((run_dir / "recipe.yaml").read_text()) if (run_dir / "recipe.yaml").exists() else {}
    config = json.loads((run_dir / "config.json").read_text())

    with tempfile.TemporaryDirectory() as workdir:
        offline_results = offline(run_dir, texts, args.batch_sizes, args.backends, Path(workdir))
        accuracy = {}
        if "int8" in args.backends:  # what quantisation costs, on the same split
            report = evaluate_run(run_dir, args.split, out_dir=Path(workdir) / "eval", quantize=True)
            accuracy = {"fp32": report["metrics"], "int8": report["int8"]["metrics"], "change": report["int8"]["change"]}
    http = {}
    if args.requests > 0:
        process, url = start_server(run_dir, threads, ["--max-batch", str(args.server_max_batch), "--wait-ms",
                                                       str(args.server_wait_ms)] + (["--quantize"] if args.server_quantize else []))
        try:
            http_load(url, split_texts, 1, min(20, args.requests))  # warm-up
            for clients in args.clients:
                http[f"clients_{clients}"] = h = http_load(url, split_texts, clients, args.requests)
                print(f"http {clients:>3} clients: {h['throughput_rps']:7.1f} req/s  p50 {h['p50_ms']:.1f} ms  "
                      f"p95 {h['p95_ms']:.1f} ms  p99 {h['p99_ms']:.1f} ms  errors {h['errors']}")
        finally:
            process.terminate()
            process.wait(30)

    name = args.name or run_dir.name
    result = {
        "benchmark": "inference", "name": name, **provenance(), "seeds": [recipe["seed"]] if "seed" in recipe else [],
        "run_dir": str(run_dir),
        "model": {"encoder": config.get("encoder"), "encoder_type": config.get("encoder_type"),
                  "slot_decoder": config.get("slot_decoder"),
                  "feedback_iterations": (config.get("feedback") or {}).get("iterations", 0)},
        "settings": {"split": args.split, "utterances": len(texts), "batch_sizes": args.batch_sizes, "threads": threads,
                     "requests": args.requests, "clients": args.clients, "server_max_batch": args.server_max_batch,
                     "server_wait_ms": args.server_wait_ms, "server_quantize": args.server_quantize},
        "throughput": offline_results, "accuracy": accuracy, "http": http,
    }
    result["summary_markdown"] = markdown(result)
    out = args.out or RESULTS / f"inference_{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(result["summary_markdown"])
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
