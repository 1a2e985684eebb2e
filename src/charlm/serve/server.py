"""The explorer's HTTP server: the standard library's threading server, guarded for a local tool.

A page on any web site can make a browser send requests to ``127.0.0.1``, so the server trusts
nothing about the client but what it can check::

    request --Host an IP or localhost, with our port?--> 403 otherwise (DNS rebinding)
            --POST: Origin ours (or none), JSON, at most 1 MB?--> 403 / 415 / 413
            --a path on the list?--> 404 (no file is ever looked up from a client's path)
            --a place in the queue?--> 429 past it; one model computation at a time
            --> JSON, or a stream of JSON lines for a generation

Every answer carries ``Content-Security-Policy: default-src 'self'``, so the page runs only its
own scripts (ES modules, which import each other from this origin) and talks only to its own
origin. Runs are loaded once, at start, with :func:`charlm.load` (safetensors and JSON, nothing
unpickled).
"""

from __future__ import annotations

import functools
import ipaddress
import json
import queue as _queue
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any

from ..checkpoint import load
from .api import ApiError, Explorer, Limits

MAX_BODY = 1_000_000  # bytes of a request body
DRAIN = 16 * MAX_BODY  # a bigger body than this is not even read to be refused
QUEUE = 4  # requests that may wait for the model; one more is answered 429
# The types of the files served from the static folder; a browser runs an ES module only if its type
# is JavaScript's, and `nosniff` makes it trust the type alone.
STATIC_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
HEADERS = {"Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
                                      "form-action 'none'",
           "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store",
           "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY",
           "Cross-Origin-Resource-Policy": "same-origin"}
# How long a generation computes before it hands its tokens to the page and lets others have a turn.
CHUNK_SECONDS = 0.03


class Busy(ApiError):
    def __init__(self) -> None:
        super().__init__(429, f"the model is busy with {QUEUE} waiting requests; try again in a moment")


# How often the main thread, waiting for work, wakes to take a Ctrl-C another thread received.
WAKE_SECONDS = 0.25


class Gate:
    """One model computation at a time, and at most `queue` callers waiting for their turn.

    A computation runs in its caller's thread, one after another, until :meth:`work_here` makes one
    thread run them all. `charlm serve` gives them its main thread: torch's OpenMP threads spin
    waiting for work only while the threads that start parallel work are no more than the cores,
    so a model stepped from a second thread (each request's own) has every parallel product wait
    for a sleeping thread to wake, and a 2 x 512 LSTM decodes at 3,600 characters/s instead of
    9,000 (2-core AMD EPYC).
    """

    def __init__(self, queue: int = QUEUE) -> None:
        self._lock, self._count, self._mutex, self.queue = threading.Lock(), 0, threading.Lock(), queue
        self._jobs: _queue.SimpleQueue | None = None

    def run(self, work: Callable[[], Any]) -> Any:
        """What `work()` returns (or raises), computed in its turn; :class:`Busy` past the queue."""
        with self._mutex:
            if self._count > self.queue:  # one computing and `queue` waiting
                raise Busy()
            self._count += 1
        try:
            jobs = self._jobs
            if jobs is None:
                with self._lock:
                    return work()
            job = _Job(work)
            jobs.put(job)
            return job.outcome()
        finally:
            with self._mutex:
                self._count -= 1

    def work_here(self) -> None:
        """Run every computation in the calling thread from now on, until KeyboardInterrupt (Ctrl-C)."""
        self._jobs = _queue.SimpleQueue()
        try:
            while True:
                # Never an endless wait: a Ctrl-C that the kernel hands to another thread (the one
                # serving requests, say) only marks the signal, and the main thread raises it when it
                # next runs Python code, which a wait without end would never let it do.
                try:
                    job = self._jobs.get(timeout=WAKE_SECONDS)
                except _queue.Empty:
                    continue
                job.do()
        finally:
            self._jobs = None


class _Job:
    """A computation handed to the thread that works, and its outcome for the thread that waits."""

    def __init__(self, work: Callable[[], Any]) -> None:
        self.work, self.done = work, threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None

    def do(self) -> None:
        try:
            self.value = self.work()
        except Exception as err:  # the caller's to answer (an ApiError, a bug of a request)
            self.error = err
        except BaseException:  # Ctrl-C in the middle: the server stops, the caller is told so
            self.error = ApiError(503, "the server is stopping")
            raise
        finally:
            self.done.set()

    def outcome(self) -> Any:
        self.done.wait()
        if self.error is not None:
            raise self.error
        return self.value


@functools.cache
def static_files() -> dict[str, tuple[str, str]]:
    """Each path the page is served at -> (its file in the static folder, its Content-Type): `/` for
    index.html, and `/static/NAME` for each script (the page's ES modules) and style sheet there.

    The table is made from the folder's own listing, so a client's path is only ever looked up in it,
    never joined to a file name: ``/static/../x`` or ``/static/index.html`` is simply not a key."""
    folder = resources.files("charlm.serve").joinpath("static")
    table = {"/": ("index.html", "text/html; charset=utf-8")}
    for entry in folder.iterdir():
        kind = STATIC_TYPES.get(Path(entry.name).suffix)
        if kind and entry.is_file():
            table[f"/static/{entry.name}"] = (entry.name, kind)
    return table


def _static(name: str) -> bytes:
    return resources.files("charlm.serve").joinpath("static", name).read_bytes()


class Handler(BaseHTTPRequestHandler):
    server: ExplorerServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        pass  # the command line shows its one address line, not a line per request

    # ---- who may ask ----

    def _host_ok(self) -> bool:
        """A Host of an IP address or localhost, with our port: a DNS rebinding attack comes under
        a name of the attacker's, which resolves to us but is not one of these."""
        host, _, port = (self.headers.get("Host") or "").rpartition(":")
        if port != str(self.server.server_port):
            return False
        host = host.strip("[]")
        if host == "localhost":
            return True
        try:
            ipaddress.ip_address(host)
        except ValueError:
            return False
        return True

    def _origin_ok(self) -> bool:
        """POSTs only from our own page: a browser names the page's origin on every POST it sends."""
        origin = self.headers.get("Origin")
        site = self.headers.get("Sec-Fetch-Site")
        if site not in (None, "same-origin", "none"):
            return False
        return origin is None or origin == f"http://{self.headers.get('Host')}"

    # ---- answers ----

    def _send(self, status: int, body: bytes, content_type: str, extra: dict | None = None) -> None:
        self.send_response(status)
        for name, value in {**HEADERS, **(extra or {}), "Content-Type": content_type,
                            "Content-Length": str(len(body))}.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, data: Any) -> None:
        extra = {"Retry-After": "1"} if status == 429 else None
        self._send(status, json.dumps(data, ensure_ascii=False).encode("utf-8"),
                   "application/json; charset=utf-8", extra)

    def _error(self, status: int, message: str) -> None:
        self.close_connection = True  # the body of a refused request may still be unread
        self._json(status, {"error": message})

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        if not self._host_ok():
            return self._error(403, "this server answers only to its own address (Host header)")
        path = self.path.split("?", 1)[0]
        static = static_files()
        if path in static:
            name, kind = static[path]
            return self._send(200, _static(name), kind)
        if path == "/favicon.ico":
            return self._send(204, b"", "image/x-icon")
        if path == "/api/runs":
            return self._json(200, self.server.explorer.runs_info())
        parts = path.split("/")
        if len(parts) == 5 and parts[:3] == ["", "api", "runs"] and parts[4] == "metrics":
            return self._answer(lambda: self.server.explorer.metrics(parts[3]))
        return self._error(404, f"nothing at {path[:80]!r}")

    do_HEAD = do_GET

    def do_POST(self) -> None:  # noqa: N802
        if not self._host_ok():
            return self._error(403, "this server answers only to its own address (Host header)")
        if not self._origin_ok():
            return self._error(403, "requests from other web pages are refused (Origin header)")
        endpoint = POSTS.get(self.path)
        if endpoint is None:
            return self._error(404, f"nothing to POST at {self.path[:80]!r}")
        body = self._body()
        if body is None:
            return None
        if endpoint == "generate":
            return self._generate(body)
        return self._answer(lambda: getattr(self.server.explorer, endpoint)(body), compute=True)

    def do_PUT(self) -> None:  # noqa: N802
        self._error(405, f"{self.command} is not answered here; the explorer takes GET and POST")

    do_DELETE = do_PATCH = do_OPTIONS = do_PUT

    def _body(self) -> dict | None:
        """The JSON object of a POST, or None once a 4xx has been sent."""
        if not (self.headers.get("Content-Type") or "").startswith("application/json"):
            return self._error(415, "send the request as JSON (Content-Type: application/json)")
        try:
            length = int(self.headers.get("Content-Length") or "")
        except ValueError:
            return self._error(411, "the request needs a Content-Length")
        if not 0 <= length <= MAX_BODY:
            self._discard(length)
            return self._error(413, f"the request has {length:,} bytes; at most {MAX_BODY:,}")
        try:
            body = json.loads(self.rfile.read(length).decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as err:
            return self._error(400, f"the request is not JSON: {err}")
        if not isinstance(body, dict):
            return self._error(400, "the request must be a JSON object")
        return body

    def _discard(self, length: int) -> None:
        """Read and drop a refused body of modest size, so that the client, still sending it, gets
        the answer rather than a broken connection; a huge one is cut off instead."""
        if 0 < length <= DRAIN:
            while length > 0:
                length -= len(self.rfile.read(min(length, 65536)) or b"x" * length)

    def _answer(self, work, *, compute: bool = False) -> None:
        """Answer with what `work()` returns; `compute`: it runs the model, so it waits its turn."""
        try:
            if compute:
                data = self.server.gate.run(work)
            else:
                data = work()
        except ApiError as err:
            return self._error(err.status, str(err))
        return self._json(200, data)

    def _generate(self, body: dict) -> None:
        """A generation as a stream of JSON lines, a chunk of tokens each, written as they come; the
        model is taken for one chunk at a time, so two pages generating at once take turns. A page
        that stops reading (its Stop button) ends the loop at the next write."""
        try:
            first, steps = self.server.gate.run(lambda: self.server.explorer.generate(body))
        except ApiError as err:
            return self._error(err.status, str(err))
        self.send_response(200)
        for name, value in {**HEADERS, "Content-Type": "application/x-ndjson; charset=utf-8",
                            "Transfer-Encoding": "chunked"}.items():
            self.send_header(name, value)
        self.end_headers()
        try:
            self._chunk(first)
            seconds = 0.0  # the first chunk is the first token alone: it reaches the page at once
            while True:
                try:
                    line = self.server.gate.run(functools.partial(_take, steps, seconds))
                    seconds = CHUNK_SECONDS
                except ApiError as err:
                    line = {"error": str(err)}
                if line is None:
                    break
                self._chunk(line)
            self._chunk({"done": True})
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the page stopped reading: stop generating
        finally:
            steps.close()

    def _chunk(self, data: dict) -> None:
        line = json.dumps(data, ensure_ascii=False).encode("utf-8") + b"\n"
        self.wfile.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
        self.wfile.flush()


POSTS = {"/api/analyze": "analyze", "/api/next": "next", "/api/generate": "generate",
         "/api/units": "units", "/api/units/search": "search", "/api/compare": "compare",
         "/api/attribute": "attribute", "/api/clamp": "clamp", "/api/clamp/generate": "clamp_generate",
         "/api/ablation": "ablation"}


def _take(steps: Iterator, seconds: float) -> dict | None:
    """The steps computed within `seconds` (at least one) as one line; None when there are none left."""
    tokens: list[list[str]] | None = None
    probs: list[list[float]] = []
    deadline = time.perf_counter() + seconds
    for step in steps:
        if tokens is None:
            tokens, probs = [[] for _ in step.tokens], [[] for _ in step.tokens]
        for i, (tok, p) in enumerate(zip(step.tokens, step.probs)):
            if tok:
                tokens[i].append(tok)
                probs[i].append(round(p, 5))
        if time.perf_counter() >= deadline:
            break
    return None if tokens is None else {"tokens": tokens, "probs": probs}


class ExplorerServer(ThreadingHTTPServer):
    """The server with what its handlers share: the explorer and the gate."""

    daemon_threads = True  # a page left open does not keep the command from ending

    def __init__(self, explorer: Explorer, host: str, port: int) -> None:
        self.explorer, self.gate = explorer, Gate()
        super().__init__((host, port), Handler)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = self.server_address[0]
        return f"http://{f'[{host}]' if ':' in host else host}:{self.server_port}/"

    def start(self) -> ExplorerServer:
        """Serve from a background thread (for tests and scripts); :meth:`close` stops it."""
        self._thread = threading.Thread(target=self.serve_forever, name="charlm-serve", daemon=True)
        self._thread.start()
        return self

    def serve(self) -> None:
        """Serve until Ctrl-C, the model's computations in this thread (see :class:`Gate`), the
        requests in a background one: what `charlm serve` does."""
        self.start()
        try:
            self.gate.work_here()
        finally:
            self.close()

    def close(self) -> None:
        if self._thread is not None:  # shutdown() waits for a serving loop: none ran if never started
            self.shutdown()
        self.server_close()
        if self._thread is not None:
            self._thread.join()


def open_server(run_dirs: list[str | Path], *, host: str = "127.0.0.1", port: int = 8000,
                which: str = "best", limits: Limits | None = None) -> ExplorerServer:
    """Load the runs (``r0``, ``r1``, ... in order) and bind the server, not yet serving."""
    runs = [load(path, which=which) for path in run_dirs]
    return ExplorerServer(Explorer(runs, limits or Limits(), which=which), host, port)


def start(run_dirs: list[str | Path], *, host: str = "127.0.0.1", port: int = 0, which: str = "best",
          limits: Limits | None = None) -> ExplorerServer:
    """The server, serving from a background thread: ``start(["runs/tm"]).url`` -> its address."""
    return open_server(run_dirs, host=host, port=port, which=which, limits=limits).start()
