"""JSON HTTP API for a trained run (FastAPI + uvicorn: `pip install 'slu_feedback[serve]'`).

    slu-serve runs/atis-...                  # http://127.0.0.1:8000  (/docs: OpenAPI page, works offline)

    POST /parse   {"text": "..."}            -> the SLUParser dict
                  {"texts": ["...", ...]}    -> a list of SLUParser dicts, in order
                  optional "explain": true   -> adds the prediction at every feedback iteration
                  optional "dataset": "atis" -> a joint run answers with that dataset's heads
    GET  /health  liveness and queue state
    GET  /model   labels, encoder, feedback settings, the run's all_results.json
    GET  /        a small web page to try utterances

A result's `"truncated": true` says the utterance was longer than the run's `max_length` sub-tokens
(see GET /model): only its first `"words_seen"` words were read, the later ones are tagged O.

Concurrent requests are micro-batched: a single worker takes the first waiting request, gathers
others for up to `wait_ms` milliseconds or until `max_batch` utterances, and parses them together
in one forward pass on a dedicated thread (the event loop never blocks on the model).

Bad input gets a 4xx with a message in `error` (400 malformed JSON or a body that is not UTF-8,
413 body too large, 422 wrong types, empty or too long text, too many texts); a 422 from the type
checks also lists pydantic's errors in `detail`, each with a short excerpt of the offending input.
A body sent with another Content-Type than JSON gets 415 (one without a Content-Type is read as JSON) with a message saying to send
`Content-Type: application/json` (what `curl -d` without `-H` sends is a form); refusing it keeps
the protection FastAPI gives: a web page can send a form or text to a local server without the
browser asking first, but not JSON. The server binds to loopback by default.
"""

import asyncio
import contextlib
import json
import logging
import os
import reprlib
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, StrictBool, StrictStr, ValidationError
from starlette.exceptions import HTTPException

from .parser import SLUParser

try:  # /docs with Swagger UI's scripts served by this server, not fetched from a CDN (offline machines)
    from fastapi_offline import FastAPIOffline as make_app
except ImportError:  # an install from before the [serve] extra listed it: /docs needs the internet
    make_app = FastAPI

STATIC = Path(__file__).resolve().parent / "static"
LOOPBACK = ("127.0.0.1", "localhost", "::1")
logger = logging.getLogger("slu_feedback.server")


@dataclass
class ServerSettings:
    max_batch: int = 32  # utterances per forward pass
    wait_ms: float = 5.0  # how long the worker waits for more requests to join a batch
    max_texts: int = 64  # utterances per request
    max_chars: int = 1000  # characters per utterance
    max_body_bytes: int = 1 << 20  # request body limit (1 MiB)


class ParseRequest(BaseModel):
    """Give `text` (one utterance) or `texts` (a list), not both."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"text": "play some jazz by miles davis"},
                                                                            {"texts": ["wake me up at 7", "weather in paris"]}]})
    text: StrictStr | None = None
    texts: list[StrictStr] | None = None
    explain: StrictBool = False
    dataset: StrictStr | None = None  # joint runs: which dataset's heads answer (default: the most confident)


class ErrorBody(BaseModel):
    """Every 4xx answer (for the OpenAPI page)."""

    error: str  # one readable line
    detail: list[dict] | None = None  # 422 from the type checks: pydantic's errors (type, loc, msg, input excerpt)


PARSE_EXAMPLE = {"text": "play some jazz", "intent": "PlayMusic", "intent_score": 0.9731,
                 "top_intents": [{"intent": "PlayMusic", "score": 0.9731},
                                 {"intent": "AddToPlaylist", "score": 0.0112}],
                 "slots": [{"label": "genre", "text": "jazz", "start": 10, "end": 14, "score": 0.9412}],
                 "words": ["play", "some", "jazz"], "tags": ["O", "O", "B-genre"], "iterations": 2, "truncated": False}
JSON_HINT = "send a JSON object such as {\"text\": \"...\"} with Content-Type: application/json"
JSON_KINDS = {type(None): "null", list: "an array", str: "a string", bool: "true/false"}  # else a number


# -- micro-batching -------------------------------------------------------------------------------
class MicroBatcher:
    """One asyncio queue and one worker; the model runs on a single background thread."""

    def __init__(self, parse, max_batch: int = 32, wait_ms: float = 5.0):
        self.parse = parse  # (texts, explain) -> list of dicts
        self.max_batch, self.wait = max_batch, wait_ms / 1000
        self.queue: asyncio.Queue | None = None
        self.task = None
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="slu-parse")
        self.batches = self.utterances = 0

    async def start(self):
        self.queue = asyncio.Queue()
        self.task = asyncio.create_task(self._worker())

    async def stop(self):
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        self.executor.shutdown(wait=False, cancel_futures=True)

    async def submit(self, texts: list, explain: bool = False) -> list:
        if self.task is None or self.task.done():
            raise RuntimeError("the parsing worker is not running")
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((texts, explain, future))
        return await future

    async def _worker(self):
        loop = asyncio.get_running_loop()
        while True:
            items = [await self.queue.get()]
            count = len(items[0][0])
            deadline = loop.time() + self.wait
            while count < self.max_batch:
                try:
                    item = self.queue.get_nowait() if self.queue.qsize() else \
                        await asyncio.wait_for(self.queue.get(), max(0.0, deadline - loop.time()))
                except (asyncio.TimeoutError, asyncio.QueueEmpty):
                    break
                items.append(item)
                count += len(item[0])
            items = [item for item in items if not item[2].done()]  # clients that went away
            if items:
                await self._answer(loop, items)

    async def _answer(self, loop, items: list):
        """Parse the waiting requests in one forward pass. If that fails, each request is parsed on
        its own, so that one bad request gets the error and the others their results; the worker
        lives on either way."""
        texts = [t for item in items for t in item[0]]
        explain = any(item[1] for item in items)
        try:
            results = await loop.run_in_executor(self.executor, self.parse, texts, explain)
        except Exception as error:
            logger.exception("parsing a batch of %d utterances failed", len(texts))
            if len(items) > 1:
                for item in items:
                    await self._answer(loop, [item])
            elif not items[0][2].done():
                items[0][2].set_exception(error)
            return
        self.batches += 1
        self.utterances += len(texts)
        start = 0
        for item_texts, item_explain, future in items:
            part = results[start:start + len(item_texts)]
            start += len(item_texts)
            if explain and not item_explain:
                part = [{k: v for k, v in r.items() if k != "explain"} for r in part]
            if not future.done():
                future.set_result(part)


# -- request body limit ---------------------------------------------------------------------------
class BodyLimitMiddleware:
    """413 for bodies over `max_bytes`: from Content-Length up front, or while a chunked body streams."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None:
            try:
                too_big = int(length) > self.max_bytes
            except ValueError:
                return await _send_json(send, 400, {"error": "invalid Content-Length header"})
            if too_big:
                return await _send_json(send, 413, {"error": f"request body too large: {int(length)} bytes "
                                                             f"(limit {self.max_bytes})"})
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise HTTPException(413, f"request body too large (limit {self.max_bytes} bytes)")
            return message

        await self.app(scope, limited_receive, send)


async def _send_json(send, status: int, payload: dict):
    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


_short = reprlib.Repr()
_short.maxstring = _short.maxother = 100
_short.maxlevel = 3


def _clip(text: str, limit: int = 100) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _excerpt(value) -> str:
    """A short repr of a client's input: echoing it whole could return a megabyte, and a NaN or
    Infinity (which Python's json reads) cannot be written back as JSON at all."""
    return _clip(_short.repr(value))


def _validation_message(errors) -> str:
    """One readable line from pydantic/FastAPI validation errors."""
    parts = []
    for error in errors:
        where = _clip(".".join(str(x) for x in error.get("loc", ()) if x != "body"))
        if error.get("type") == "extra_forbidden":
            parts.append(f"unknown field {where!r} (expected 'text' or 'texts', and optionally 'explain', 'dataset')")
        else:
            parts.append(f"{where}: {error.get('msg')}" if where else str(error.get("msg")))
    return "; ".join(parts) or "invalid request"


async def _read_json(request: Request):
    """The body as JSON: 415 for another Content-Type (none counts as JSON, as in FastAPI), 400 with
    a message for bytes that are not UTF-8 JSON, where FastAPI would give a generic text or a
    misleading 422."""
    media = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if media and media != "application/json" and not media.endswith("+json"):
        raise HTTPException(415, f"Content-Type {media} is not JSON: {JSON_HINT}")
    body = await request.body()
    if not body:
        raise HTTPException(422, "missing JSON body: send {\"text\": \"...\"} or {\"texts\": [...]}")
    try:  # UTF-8 (a BOM allowed); json.loads would take UTF-16 and -32 bytes too
        return json.loads(body.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise HTTPException(400, "malformed JSON: the body is not UTF-8; send UTF-8 encoded JSON") from None
    except json.JSONDecodeError as err:
        raise HTTPException(400, f"malformed JSON: {err.msg} at line {err.lineno} column {err.colno}") from None
    except RecursionError:
        raise HTTPException(400, "malformed JSON: nested too deeply") from None
    except ValueError:  # the one ValueError left: an integer of more digits than Python converts
        raise HTTPException(400, f"malformed JSON: a number of more than {sys.get_int_max_str_digits()} digits") from None


# -- the app ----------------------------------------------------------------------------------------
def create_app(parser: SLUParser, run_dir=None, settings: ServerSettings | None = None, quantized: bool = False) -> FastAPI:
    settings = settings or ServerSettings()
    # the batcher's items are (text, dataset) pairs, so requests for different datasets share a batch
    batcher = MicroBatcher(lambda items, explain: parser([t for t, _ in items], explain=explain, batch_size=settings.max_batch,
                                                         dataset=[d for _, d in items]),
                           settings.max_batch, settings.wait_ms)
    started = time.time()

    @contextlib.asynccontextmanager
    async def lifespan(app):
        await batcher.start()
        try:
            yield
        finally:
            await batcher.stop()

    app = make_app(title="slu_feedback", lifespan=lifespan,
                   description="Joint intent detection and slot filling with an output-level feedback loop. "
                               "POST /parse with {\"text\": ...} or {\"texts\": [...]}.")
    app.state.batcher, app.state.parser, app.state.settings = batcher, parser, settings
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request: Request, exc: RequestValidationError):
        """422; `detail` keeps only JSON-safe fields and an excerpt of the input (see `_excerpt`)."""
        errors = exc.errors()
        detail = [{"type": str(e.get("type")), "msg": str(e.get("msg")), "input": _excerpt(e.get("input")),
                   "loc": [x if isinstance(x, int) else _clip(str(x)) for x in e.get("loc", ())]} for e in errors]
        return JSONResponse({"error": _validation_message(errors), "detail": detail}, status_code=422)

    @app.exception_handler(HTTPException)
    async def on_http_error(request: Request, exc: HTTPException):
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    def error(status: int, message: str):
        raise HTTPException(status, message)

    errors = {status: {"model": ErrorBody, "description": text} for status, text in (
        (400, "Malformed JSON, or a body that is not UTF-8"), (413, "Request body too large"),
        (415, "Content-Type is not application/json"),
        (422, "Wrong types, empty or too long text, too many texts, unknown dataset"))}

    # the body is read by `_read_json`, not by FastAPI, so its schema is given here
    @app.post("/parse", summary="Parse one utterance or a list of them",
              responses={200: {"description": "One result for `text`, a list of results for `texts`",
                               "content": {"application/json": {"example": PARSE_EXAMPLE}}}, **errors},
              openapi_extra={"requestBody": {"required": True, "content": {
                  "application/json": {"schema": ParseRequest.model_json_schema()}}}})
    async def parse(http: Request):
        data = await _read_json(http)
        if not isinstance(data, dict):
            error(422, f"the JSON body must be an object, not {JSON_KINDS.get(type(data), 'a number')}: {JSON_HINT}")
        try:
            request = ParseRequest.model_validate(data)
        except ValidationError as err:
            raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in err.errors()]) from None
        if (request.text is None) == (request.texts is None):
            error(422, "give either 'text' (a string) or 'texts' (a list of strings), not both" if request.text is not None
                  else "missing 'text' (a string) or 'texts' (a list of strings)")
        texts = [request.text] if request.text is not None else request.texts
        if not texts:
            error(422, "'texts' is empty: give at least one utterance")
        if len(texts) > settings.max_texts:
            error(422, f"too many texts: {len(texts)} (limit {settings.max_texts} a request)")
        joint = len(parser.models) > 1 or "" not in parser.models
        if request.dataset is not None and request.dataset not in parser.models:
            error(422, f"unknown dataset {request.dataset!r}; this model answers for {', '.join(parser.models)}" if joint
                  else "'dataset' applies to joint runs only; this model has one dataset")
        for i, text in enumerate(texts):
            where = "'text'" if request.text is not None else f"texts[{i}]"
            if len(text) > settings.max_chars:
                error(422, f"{where} is too long: {len(text)} characters (limit {settings.max_chars})")
            if not parser.words_of(text, request.dataset):  # no word the heads would see: whitespace, zero-width spaces
                error(422, f"{where} is empty, or whitespace and invisible characters only: nothing to parse")
        results = await batcher.submit([(t, request.dataset) for t in texts], request.explain)
        return results[0] if request.text is not None else results

    @app.get("/health", summary="Liveness")
    async def health():
        alive = batcher.task is not None and not batcher.task.done()
        return JSONResponse({"status": "ok" if alive else "error", "queue": batcher.queue.qsize() if batcher.queue else 0,
                             "batches": batcher.batches, "utterances": batcher.utterances,
                             "uptime_s": round(time.time() - started, 1)}, status_code=200 if alive else 503)

    info = model_info(parser, run_dir, settings, quantized)

    @app.get("/model", summary="Labels, encoder, feedback settings and the run's metrics")
    async def model():
        return info

    @app.get("/", include_in_schema=False)
    async def index():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    return app


def model_info(parser: SLUParser, run_dir, settings: ServerSettings, quantized: bool) -> dict:
    config = parser.model.config
    slot_types = sorted({tag[2:] for tag in config.slot_labels if tag[:2] in ("B-", "I-")})
    info = {
        "run_dir": str(run_dir) if run_dir else None,
        "encoder": config.encoder, "encoder_type": config.encoder_type, "slot_decoder": config.slot_decoder,
        "pooling": config.pooling, "head_hidden": config.head_hidden,
        "intents": list(config.intent_labels), "slot_types": slot_types, "slot_tags": list(config.slot_labels),
        "feedback": dict(config.feedback), "gate_probabilities": parser.model.gate_probabilities(),
        "quantized": quantized, "device": str(parser.device), "max_length": parser.max_length,
        "limits": asdict(settings),
        "metrics": None, "provenance": None,  # what trained the run (all_results.json's, at the top for a deployer)
    }
    if len(parser.models) > 1:  # a joint run: each dataset's labels (the top-level ones are the first's)
        info["datasets"] = {name: {"intents": list(m.config.intent_labels), "slot_tags": list(m.config.slot_labels)}
                            for name, m in parser.models.items()}
    results = Path(run_dir) / "all_results.json" if run_dir else None
    if results is not None and results.exists():
        try:
            metrics = json.loads(results.read_text(encoding="utf-8"))
            if not isinstance(metrics, dict):
                raise ValueError(f"a JSON {type(metrics).__name__}, not an object")
            info["metrics"], info["provenance"] = metrics, metrics.get("provenance")
        except (OSError, ValueError) as err:
            logger.warning("cannot read %s: %s", results, err)
    return info


def app_from_env() -> FastAPI:
    """The app for a process manager of one's own or several worker processes (each loads the model):
    `SLU_RUN=runs/atis-1 uvicorn slu_feedback.inference.server:app_from_env --factory --workers 4`;
    SLU_DEVICE (default cpu), SLU_QUANTIZE=1 and SLU_INTENT_SLOT_CONSTRAINTS=1 (or 0) as slu-serve's
    --device, --quantize and --[no-]intent-slot-constraints."""
    run_dir = os.environ.get("SLU_RUN")
    if not run_dir:
        raise RuntimeError("set SLU_RUN to the run directory to serve")
    yes = ("1", "true", "yes")
    quantize = os.environ.get("SLU_QUANTIZE", "").lower() in yes
    constraints = os.environ.get("SLU_INTENT_SLOT_CONSTRAINTS")
    parser = SLUParser.from_pretrained(run_dir, device=os.environ.get("SLU_DEVICE", "cpu"), quantize=quantize,
                                       intent_slot_constraints=None if constraints is None else constraints.lower() in yes)
    return create_app(parser, run_dir, quantized=quantize)


def serve(run_dir, host: str = "127.0.0.1", port: int = 8000, quantize: bool = False,
          settings: ServerSettings | None = None, log_level: str = "info", device: str = "cpu",
          intent_slot_constraints: bool | None = None):
    """Load `run_dir` on `device` and serve it with uvicorn until interrupted."""
    import uvicorn

    parser = SLUParser.from_pretrained(run_dir, device=device, quantize=quantize,
                                       intent_slot_constraints=intent_slot_constraints)
    app = create_app(parser, run_dir, settings, quantized=quantize)
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5)
