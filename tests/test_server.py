"""`slu-serve`: the HTTP API on a real loopback socket with a tiny trained run, every endpoint,
every kind of bad request, concurrency (micro-batching), the web page and the CLI."""

import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="needs the serve extra: pip install 'slu_feedback[serve]'")
uvicorn = pytest.importorskip("uvicorn", reason="needs the serve extra: pip install 'slu_feedback[serve]'")
httpx = pytest.importorskip("httpx", reason="needs httpx: pip install 'slu_feedback[serve]'")

from slu_feedback.inference.parser import SLUParser  # noqa: E402
from slu_feedback.inference.server import MicroBatcher, ServerSettings, create_app  # noqa: E402

pytestmark = pytest.mark.e2e
TEXTS = ["play some jazz by miles davis", "what is the weather in paris tomorrow", "wake me up at 6:30",
         "book a table for two at an italian place", "set an alarm", "Zürich wetter 🙂", "hi"]
LIMITS = ServerSettings(max_batch=8, wait_ms=5, max_texts=8, max_chars=200, max_body_bytes=16384)


@pytest.fixture(scope="module")
def trained_run(tiny_run_factory):
    return tiny_run_factory("model.feedback.iterations=2")


@pytest.fixture(scope="module")
def parser(trained_run):
    return SLUParser.from_pretrained(trained_run)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(trained_run, parser):
    """uvicorn on a free loopback port in a background thread; yields (base_url, app)."""
    app = create_app(parser, trained_run, LIMITS)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        assert thread.is_alive() and time.time() < deadline, "server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}", app
    server.should_exit = True
    thread.join(10)
    sock.close()


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server[0], timeout=30) as c:
        yield c


def same_parse(a: dict, b: dict) -> bool:
    """Equal up to float noise from different batch padding (scores are rounded to 4 places)."""
    strip = lambda r: {k: v for k, v in r.items() if k not in ("intent_score", "top_intents", "slots")}  # noqa: E731
    spans = lambda r: [(s["label"], s["text"], s["start"], s["end"]) for s in r["slots"]]  # noqa: E731
    return (strip(a) == strip(b) and spans(a) == spans(b) and abs(a["intent_score"] - b["intent_score"]) < 1e-3
            and [t["intent"] for t in a["top_intents"]] == [t["intent"] for t in b["top_intents"]])


def test_a_damaged_all_results_file_is_logged_not_fatal(parser, tmp_path, caplog):
    """/model's metrics come from all_results.json; a file that is not a JSON object (hand-edited,
    cut off) leaves them out with a log line instead of stopping the server at startup."""
    from slu_feedback.inference.server import ServerSettings, model_info

    for text in ("[]", '{"intent_acc": 9'):
        (tmp_path / "all_results.json").write_text(text)
        caplog.clear()
        info = model_info(parser, tmp_path, ServerSettings(), False)
        assert info["metrics"] is None and info["provenance"] is None and info["intents"] == parser.intents
        assert "cannot read" in caplog.text and "all_results.json" in caplog.text


def test_health_model_and_openapi(client, parser, trained_run):
    health = client.get("/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    info = client.get("/model").json()
    assert info["intents"] == parser.intents and info["slot_tags"] == parser.slot_labels
    assert info["feedback"]["iterations"] == 2 and info["encoder_type"] == "hf"
    assert set(info["gate_probabilities"]) == {"slot_to_intent", "intent_to_slot"}
    assert info["metrics"] == json.loads((Path(trained_run) / "all_results.json").read_text())
    assert info["provenance"] == info["metrics"]["provenance"] and info["provenance"]["data"]["dataset"]["train"]["n"]
    assert info["limits"]["max_texts"] == 8 and info["quantized"] is False and info["device"] == "cpu"
    schema = client.get("/openapi.json").json()
    assert {"/parse", "/health", "/model"} <= set(schema["paths"])
    docs = client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


def test_docs_page_needs_no_internet(client):
    """/docs loads Swagger UI's script and style from this server (an offline machine has no CDN)."""
    page = client.get("/docs").text
    assets = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert any(a.endswith("swagger-ui-bundle.js") for a in assets) and any(a.endswith(".css") for a in assets)
    for asset in assets:
        assert asset.startswith("/"), asset  # not https://cdn...
        response = client.get(asset)
        assert response.status_code == 200 and len(response.content) > 100, asset


def test_parse_one_and_many_equal_the_parser(client, parser):
    one = client.post("/parse", json={"text": TEXTS[0]})
    assert one.status_code == 200
    assert same_parse(one.json(), parser(TEXTS[0]))
    many = client.post("/parse", json={"texts": TEXTS})
    assert many.status_code == 200
    results = many.json()
    assert [r["text"] for r in results] == TEXTS
    assert all(same_parse(r, parser(t)) for r, t in zip(results, TEXTS))
    for text, r in zip(TEXTS, results):
        for slot in r["slots"]:
            assert text[slot["start"]:slot["end"]] == slot["text"]
    explained = client.post("/parse", json={"text": TEXTS[1], "explain": True}).json()
    assert [step["iteration"] for step in explained["explain"]] == [0, 1, 2]
    assert "explain" not in one.json()


def test_a_truncated_utterance_says_so_in_the_json(client, parser):
    """The truncation warning stays in the server's log: the client learns it from the result."""
    long_text = " ".join(["a"] * 99)  # more sub-tokens than the run's max_length (64), within max_chars
    with pytest.warns(UserWarning, match="truncated"):
        expected = parser(long_text)
    results = client.post("/parse", json={"texts": [long_text, TEXTS[0]]}).json()
    assert results[0]["truncated"] is True and results[0]["words_seen"] == expected["words_seen"] < 99
    assert results[1]["truncated"] is False and "words_seen" not in results[1]


BAD_REQUESTS = [  # (body, content type, status, part of the message)
    (b'{"text": ', "application/json", 400, "malformed JSON"),
    (b'{"text": "play", }', "application/json", 400, "malformed JSON"),
    (b"\xff\xfe\x00garbage", "application/json", 400, ""),
    (b"", "application/json", 422, "missing"),
    (b"null", "application/json", 422, ""),
    (b"[1, 2]", "application/json", 422, ""),
    (b'"play jazz"', "application/json", 422, ""),
    (b"{}", "application/json", 422, "missing 'text'"),
    (b'{"text": ""}', "application/json", 422, "empty"),
    (b'{"text": "  \\t\\n "}', "application/json", 422, "empty"),
    (json.dumps({"text": "a" * 201}).encode(), "application/json", 422, "too long"),
    (json.dumps({"texts": ["ok", "b" * 201]}).encode(), "application/json", 422, "texts[1] is too long"),
    (json.dumps({"texts": ["play"] * 9}).encode(), "application/json", 422, "too many texts"),
    (b'{"texts": []}', "application/json", 422, "empty"),
    (b'{"texts": ["fine", ""]}', "application/json", 422, "texts[1] is empty"),
    (b'{"text": 5}', "application/json", 422, "text: Input should be a valid string"),
    (b'{"text": ["play"]}', "application/json", 422, "valid string"),
    (b'{"texts": "play jazz"}', "application/json", 422, "valid list"),
    (b'{"texts": ["ok", 3]}', "application/json", 422, "texts.1"),
    (b'{"text": "a", "texts": ["b"]}', "application/json", 422, "not both"),
    (b'{"txt": "play"}', "application/json", 422, "unknown field 'txt'"),
    (b'{"text": "play", "explain": "yes"}', "application/json", 422, "explain"),
    (b'{"text": "play", "dataset": "atis"}', "application/json", 422, "joint runs only"),
    (b'{"text": "play", "dataset": 3}', "application/json", 422, "dataset"),
    (json.dumps({"text": "x" * 20000}).encode(), "application/json", 413, "too large"),
    # Python's json reads NaN and Infinity; echoing them in `detail` used to fail the response (500)
    (b'{"text": NaN}', "application/json", 422, "text: Input should be a valid string"),
    (b'{"explain": NaN, "text": "a"}', "application/json", 422, "explain"),
    (b'{"txt": -Infinity}', "application/json", 422, "unknown field 'txt'"),
    (b'{"text": "a", "dataset": NaN}', "application/json", 422, "dataset"),
    (b'{"texts": ["a", Infinity]}', "application/json", 422, "texts.1"),
    (b'{"text": "caf\xe9"}', "application/json", 400, "not UTF-8"),  # latin-1 bytes
    (json.dumps({"text": "hi"}).encode("utf-16"), "application/json", 400, "not UTF-8"),  # json.loads took it
    (b"[" * 5000, "application/json", 400, "malformed JSON"),  # deeper than the JSON decoder's recursion
    (b'{"text": ' + b"1" * 5000 + b"}", "application/json", 400, "digits"),  # int() refuses it: was a 500
    (b'{"text": "\\u200b\\u2060"}', "application/json", 422, "invisible characters only"),  # no word to parse
    (b"text=play+jazz", "application/x-www-form-urlencoded", 415, "Content-Type: application/json"),
]


@pytest.mark.parametrize("body, content_type, status, message", BAD_REQUESTS,
                         ids=[f"{i}-{s}" for i, (_, _, s, _) in enumerate(BAD_REQUESTS)])
def test_bad_requests_get_a_clear_4xx(client, body, content_type, status, message):
    response = client.post("/parse", content=body, headers={"content-type": content_type})
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert isinstance(error, str) and error and message in error


def test_only_json_is_read_and_another_content_type_is_told_what_to_send(client):
    """`curl -d` without `-H 'content-type: application/json'` sends a form type: 415 saying what to
    send (a web page may send a form or text to a local server unasked, not JSON); no type is JSON."""
    expected = client.post("/parse", json={"text": "play jazz"}).json()
    for content_type in (None, "application/json; charset=utf-8", "application/x-www-form-urlencoded", "text/plain"):
        headers = {} if content_type is None else {"content-type": content_type}
        response = client.post("/parse", content=b'{"text": "play jazz"}', headers=headers)
        assert response.request.headers.get("content-type") == content_type
        if content_type is None or content_type.startswith("application/json"):
            assert response.status_code == 200 and same_parse(response.json(), expected), response.text
        else:
            assert response.status_code == 415, response.text
            assert response.json()["error"] == (f"Content-Type {content_type} is not JSON: send a JSON object such as "
                                                 '{"text": "..."} with Content-Type: application/json')


@pytest.mark.parametrize("body", [{"texts": "y" * 10000}, ["y" * 10000], {"y" * 10000: 1}, {"text": ["y" * 10000]}])
def test_validation_errors_echo_only_a_short_excerpt_of_the_input(client, body):
    response = client.post("/parse", json=body)
    assert response.status_code == 422, response.text[:500]
    assert len(response.content) < 1000 and "y" * 101 not in response.text
    assert isinstance(response.json()["error"], str)


def test_validation_error_detail_is_json_safe(client):
    response = client.post("/parse", content=b'{"text": NaN, "txt": Infinity}',
                           headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert [d["loc"] for d in detail] == [["body", "text"], ["body", "txt"]]
    assert [d["input"] for d in detail] == ["nan", "inf"] and all(d["msg"] and d["type"] for d in detail)


def test_openapi_declares_the_request_and_error_bodies(client):
    schema = client.get("/openapi.json").json()
    post = schema["paths"]["/parse"]["post"]
    body = post["requestBody"]["content"]["application/json"]["schema"]
    assert {"text", "texts", "explain", "dataset"} <= set(body["properties"])
    responses = post["responses"]
    assert "example" in responses["200"]["content"]["application/json"]
    for status in ("400", "413", "415", "422"):
        ref = responses[status]["content"]["application/json"]["schema"]["$ref"]
        error_schema = schema["components"]["schemas"][ref.rsplit("/", 1)[1]]
        assert error_schema["required"] == ["error"] and set(error_schema["properties"]) == {"error", "detail"}
    assert "HTTPValidationError" not in json.dumps(post)


def test_other_bad_requests_and_still_healthy(client, server):
    assert client.get("/parse").status_code == 405
    assert client.get("/nope").status_code == 404
    # a chunked body with no Content-Length is cut off at the limit too
    chunks = (b'{"text": "' + b"x" * 4000 for _ in range(6))
    response = client.post("/parse", content=chunks, headers={"content-type": "application/json"})
    assert response.status_code == 413, response.text
    # a nonsense Content-Length (httpx refuses to send one, so a raw socket)
    host, port = server[0].removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        raw.sendall(b"POST /parse HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    b"Content-Length: not-a-number\r\nConnection: close\r\n\r\n{}")
        status_line = raw.recv(200).split(b"\r\n")[0]
    assert status_line.startswith(b"HTTP/1.1 4"), status_line
    assert client.get("/health").json()["status"] == "ok"
    assert client.post("/parse", json={"text": "play jazz"}).status_code == 200


def test_concurrent_requests_all_succeed_and_match_single_parses(server, parser):
    url, app = server
    texts = [f"{TEXTS[i % len(TEXTS)]} {'please ' * (i % 3)}".strip() for i in range(40)]
    expected = [parser(t) for t in texts]
    batches_before = app.state.batcher.batches
    barrier = threading.Barrier(20)

    def call(i):
        with httpx.Client(base_url=url, timeout=60) as c:
            barrier.wait()
            first = c.post("/parse", json={"text": texts[2 * i]})
            second = c.post("/parse", json={"texts": [texts[2 * i + 1]]})
            return first, second

    with ThreadPoolExecutor(20) as pool:
        responses = list(pool.map(call, range(20)))
    results = [r for pair in responses for r in pair]
    assert all(r.status_code == 200 for r in results), [r.text for r in results if r.status_code != 200]
    got = [x for pair in responses for x in (pair[0].json(), pair[1].json()[0])]
    assert all(same_parse(g, e) for g, e in zip(got, expected))
    assert app.state.batcher.batches - batches_before < 40, "concurrent requests share forward passes"


def test_micro_batcher_groups_waiting_requests():
    calls = []

    def parse(texts, explain):
        calls.append(list(texts))
        return [{"text": t, "explain": [1]} if explain else {"text": t} for t in texts]

    async def scenario():
        batcher = MicroBatcher(parse, max_batch=4, wait_ms=200)
        await batcher.start()
        try:
            jobs = [batcher.submit([f"t{i}"], explain=(i == 1)) for i in range(4)] + [batcher.submit(["a", "b", "c"])]
            results = await asyncio.gather(*jobs)
        finally:
            await batcher.stop()
        return results

    results = asyncio.run(scenario())
    assert [r[0]["text"] for r in results[:4]] == ["t0", "t1", "t2", "t3"]
    assert [r["text"] for r in results[4]] == ["a", "b", "c"]
    assert "explain" in results[1][0] and "explain" not in results[0][0], "explain only where asked"
    # the four waiting requests share one forward pass (max_batch 4); the next request starts the next one
    assert calls == [["t0", "t1", "t2", "t3"], ["a", "b", "c"]]


def test_micro_batcher_failure_answers_requests_and_worker_survives():
    def parse(texts, explain):
        if "boom" in texts:
            raise RuntimeError("model failed")
        return [{"text": t} for t in texts]

    async def scenario():
        batcher = MicroBatcher(parse, max_batch=4, wait_ms=1)
        await batcher.start()
        try:
            with pytest.raises(RuntimeError, match="model failed"):
                await batcher.submit(["boom"])
            return await batcher.submit(["fine"])
        finally:
            await batcher.stop()

    assert asyncio.run(scenario()) == [{"text": "fine"}]

    async def shared_batch():  # a bad request in a shared forward pass fails alone
        batcher = MicroBatcher(parse, max_batch=4, wait_ms=200)
        await batcher.start()
        try:
            return await asyncio.gather(batcher.submit(["one"]), batcher.submit(["boom"]), batcher.submit(["two", "x"]),
                                        return_exceptions=True)
        finally:
            await batcher.stop()

    one, bad, two = asyncio.run(shared_batch())
    assert one == [{"text": "one"}] and two == [{"text": "two"}, {"text": "x"}] and isinstance(bad, RuntimeError)


def test_web_page_served(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "<form" in page.text and 'fetch("parse"' in page.text and "innerHTML" not in page.text


def test_web_page_cuts_the_utterance_at_code_points_like_the_server():
    """Offsets from Python count code points; JavaScript's String.slice counts UTF-16 units, so a
    page slicing with it would mark the wrong characters after an emoji."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node not installed")
    page = (Path(__file__).resolve().parents[1] / "slu_feedback" / "inference" / "static" / "index.html").read_text()
    start = page.index("function pieces(")
    source = page[start:page.index("\n}\n", start) + 3]
    text = "🎵 play jazz by miles davis 🙂"
    slots = [{"start": 7, "end": 11}, {"start": 15, "end": 26}]
    script = f"{source}\nconsole.log(JSON.stringify(pieces({json.dumps(text)}, {json.dumps(slots)}).map(p => p[0])));"
    out = subprocess.run([node, "-e", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == ["🎵 play ", "jazz", " by ", "miles davis", " 🙂"]


def test_web_page_in_headless_chromium(server, parser):
    chromium = next((p for p in ("/usr/bin/chromium", shutil.which("chromium") or "") if p and os.path.exists(p)), None)
    if chromium is None:
        pytest.skip("chromium not installed: apt-get install chromium")
    text = "🎵 play some jazz by <b>miles</b> davis"
    url = f"{server[0]}/?q={urllib.parse.quote(text)}"
    dom = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                          "--virtual-time-budget=10000", "--dump-dom", url],
                         capture_output=True, text=True, timeout=120).stdout
    assert 'data-state="done"' in dom, dom[-2000:]
    expected = parser(text)
    assert f'data-intent="{expected["intent"]}"' in dom
    assert f'id="intent-label">{expected["intent"]}</b>' in dom
    assert "<b>miles</b>" not in dom and "&lt;b&gt;miles" in dom, "user text is shown as text, not HTML"
    assert dom.count("<mark data-label=") == len(expected["slots"])


def test_serve_cli_subprocess(trained_run):
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen([sys.executable, "-m", "slu_feedback.cli.serve", str(trained_run), "--port", str(port),
                                "--threads", "1", "--log-level", "warning"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.time() + 120
        while True:
            assert process.poll() is None, process.stdout.read().decode()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.time() < deadline, "slu-serve did not come up"
            time.sleep(0.25)
        response = httpx.post(f"http://127.0.0.1:{port}/parse", json={"text": "play jazz"}, timeout=30)
        assert response.status_code == 200 and response.json()["intent"]
    finally:
        process.terminate()
        process.wait(30)


def test_serve_cli_rejects_a_broken_run(tmp_path):
    from click.testing import CliRunner

    from slu_feedback.cli.serve import main

    result = CliRunner().invoke(main, [str(tmp_path), "--port", str(free_port())])
    assert result.exit_code == 1 and "not a trained run" in result.output
    result = CliRunner().invoke(main, [str(tmp_path), "--device", "gpu0"])
    assert result.exit_code == 1 and "unknown device 'gpu0'" in result.output
    result = CliRunner().invoke(main, [str(tmp_path), "--quantize", "--device", "cuda"])
    assert result.exit_code == 1 and "--quantize" in result.output


def test_an_app_for_worker_processes_is_made_from_the_environment(trained_run, monkeypatch):
    from fastapi.testclient import TestClient

    from slu_feedback.inference.server import app_from_env

    monkeypatch.delenv("SLU_RUN", raising=False)
    with pytest.raises(RuntimeError, match="set SLU_RUN"):
        app_from_env()
    monkeypatch.setenv("SLU_RUN", str(trained_run))
    monkeypatch.setenv("SLU_QUANTIZE", "1")
    with TestClient(app_from_env()) as client:
        assert client.get("/model").json()["quantized"] is True
        assert client.post("/parse", json={"text": "play jazz"}).json()["intent"]
