"""python -m clipdiff room: a simulated workshop room against a live app, to size a deployment.

    python -m clipdiff room --backend ray --replicas 2 --users 30 --think-s 20 --duration 300 --json room.json
    python -m clipdiff room --url http://127.0.0.1:8080/ --backend ray --replicas 4 --users 100 ...   # an app you run

Each of --users attendees is one browser session (Session: Gradio's queue protocol over httpx, as the page's own
client): it asks /generate for 4 images (the app's default sampler and steps), waits for them, thinks for an
exponentially distributed time with mean --think-s (also before its first request, so arrivals are spread from the
start), and repeats until --duration is over (requests still running then are waited for and counted). Without
--url the command starts `python app.py --backend ... --replicas ...` on a free 127.0.0.1 port, measures, and stops
it.

The report: images_per_s (images delivered / wall time), p50_s and p95_s (submit -> last image, per request),
errors (failed or refused requests, queue-full included), and what was measured (backend, replicas, users, ...);
clients_cpu_s and machine_cpu_s: CPU seconds the simulated attendees and the whole machine spent while the room was
open, so a room simulated on the app's own cores can say how much of them its attendees took.
On a machine shared with other work the figures say little; measure on a quiet one (benchmarks/README.md).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import resource
import shlex
import socket
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import CancelledError
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .measured import machine

REPO_ROOT = Path(__file__).resolve().parents[2]
PROMPTS = ("A deep red rose flower", "A round white daisy with a yellow center",
           "An orange sunflower with a big brown center", "A pink flower with many petals")
IMAGES_PER_REQUEST = 4
HTTP_TIMEOUT_S = 60
READ_TIMEOUT_S = 600


class AppError(RuntimeError):
    """The app's answer to a request was an error: its message (a gr.Error's, the queue's refusal when full, ...)."""


@dataclass(frozen=True)
class Endpoint:
    """One API endpoint as the app's config and API info describe it: what a request to it carries, and which of its
    outputs an answer shows (as gradio_client: gr.State and layout blocks are left out, one output is unwrapped)."""
    fn_index: int
    trigger_id: int | None             # the component whose event runs it (a button's click), as a browser sends it
    state_inputs: tuple[int, ...]      # where gr.State inputs go: the server keeps their values, a client sends None
    defaults: tuple[tuple[bool, object], ...]   # per API parameter: whether it has a default, and that default
    shown_outputs: tuple[bool, ...]

    @classmethod
    def from_app(cls, config: dict, info: dict, api_name: str) -> "Endpoint":
        from gradio_client.utils import SKIP_COMPONENTS

        components = {c["id"]: c for c in config["components"]}
        for index, dependency in enumerate(config["dependencies"]):
            if "/" + str(dependency.get("api_name")) == api_name:
                break
        else:
            raise ValueError(f"the app has no endpoint {api_name}")
        parameters = info["named_endpoints"].get(api_name, {}).get("parameters", [])

        def skipped(component_id: int) -> bool:
            component = components[component_id]
            return component.get("skip_api", component["type"] in SKIP_COMPONENTS)

        return cls(fn_index=dependency.get("id", index),
                   trigger_id=dependency["targets"][0][0] if dependency.get("targets") else None,
                   state_inputs=tuple(i for i, c in enumerate(dependency["inputs"])
                                      if components[c]["type"] == "state"),
                   defaults=tuple((p.get("parameter_has_default", False), p.get("parameter_default"))
                                  for p in parameters),
                   shown_outputs=tuple(not skipped(c) for c in dependency["outputs"]))

    def inputs(self, args: tuple) -> list:
        """The request's data: args, the parameters not given filled with their defaults (gradio_client's
        construct_args), None where a gr.State goes."""
        if len(args) > len(self.defaults):
            raise TypeError(f"{len(args)} values for {len(self.defaults)} parameters")
        missing = [i for i, (has, _) in enumerate(self.defaults[len(args):], len(args)) if not has]
        if missing:
            raise TypeError(f"no value for parameter {missing[0]}, which has no default")
        data = list(args) + [default for _, default in self.defaults[len(args):]]
        for i in self.state_inputs:
            data.insert(i, None)
        return data

    def answer(self, data: list):
        """The outputs shown (a tuple; one output alone, itself), as gradio_client's result()."""
        shown = tuple(value for value, show in zip(data, self.shown_outputs) if show)
        return shown[0] if len(shown) == 1 else shown


class Job:
    """One request through Gradio's queue (sse_v3), as the browser's client makes it: join the queue, then read the
    session's event stream until the answer. A reader thread of its own blocks on the stream: each message is seen
    as it arrives. first_output_at: time.perf_counter() when the first output (a preview or the answer) arrived."""

    def __init__(self, session: "Session", endpoint: Endpoint, data: list, previous: "Job | None"):
        self.session, self.endpoint, self.data = session, endpoint, data
        self.event_id: str | None = None
        self.first_output_at: float | None = None
        self._outputs: list = []
        self._answer = None
        self._error: BaseException | None = None
        self._cancelled = False
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._previous = previous
        self._reader = threading.Thread(target=self._run, daemon=True, name="clipdiff-sse")
        self._reader.start()

    def done(self) -> bool:
        return self._done.is_set()

    def outputs(self) -> list:
        """The output data of every output message so far: a preview's (after the first one, only what changed:
        sse_v3 sends diffs) and the answer's (in full)."""
        return list(self._outputs)

    def result(self, timeout: float | None = None):
        """The answer (see Endpoint.answer); raises AppError for the app's error, CancelledError once cancelled,
        TimeoutError when none came within timeout seconds, or what broke the connection."""
        if not self._done.wait(timeout):
            raise TimeoutError(f"no answer within {timeout} s")
        if self._error is not None:
            raise self._error
        return self._answer

    def cancel(self) -> bool:
        """Ask the app to stop this request (Gradio's /cancel, as the browser's Stop). The app answers the cancelled
        request with an empty completion, which ends it here; False when it had already ended."""
        with self._lock:
            if self._done.is_set():
                return False
            self._cancelled = True
            event_id = self.event_id
        if event_id is not None:        # otherwise the reader cancels once the queue has named the request
            self.session.post_cancel(self.endpoint, event_id)
        return True

    def _finish(self, answer=None, error: BaseException | None = None) -> None:
        with self._lock:
            if not self._done.is_set():
                self._answer, self._error = answer, error
                self._done.set()

    def _output(self, data) -> None:
        if self.first_output_at is None:
            self.first_output_at = time.perf_counter()
        self._outputs.append(data)

    def _run(self) -> None:
        try:
            # The session's stream carries every event of the session; the previous request's stream ends (its
            # close_stream) before this one joins, so that two readers never share it.
            if self._previous is not None:
                self._previous._reader.join(timeout=READ_TIMEOUT_S)
                if self._previous._reader.is_alive():
                    raise RuntimeError("the session's previous request still holds its event stream")
                self._previous = None
            with self._lock:
                if self._cancelled:
                    raise CancelledError()
            event_id = self.session.join(self.endpoint, self.data)
            with self._lock:        # a cancel() from now on posts itself; one made before is posted here
                self.event_id, cancel = event_id, self._cancelled
            if cancel:
                self.session.post_cancel(self.endpoint, self.event_id)
            self._read()
        except BaseException as e:    # noqa: BLE001 (whatever ends the request is its caller's to see)
            self._finish(error=e)
        finally:
            self._finish(error=RuntimeError("the event stream ended before the answer"))

    def _read(self) -> None:
        with self.session.http.stream("GET", self.session.root + "queue/data",
                                      params={"session_hash": self.session.session_hash}) as response:
            response.raise_for_status()
            for line in response.iter_lines():
                if not line.startswith("data:"):
                    continue                        # the blank line that ends each message
                message = json.loads(line[5:])
                kind = message.get("msg")
                if kind == "close_stream":
                    return
                if kind == "unexpected_error":
                    raise AppError(message.get("message") or "the app's stream failed")
                if message.get("event_id") != self.event_id:
                    continue                        # heartbeats, and a cancelled request's late messages
                if kind == "process_generating":
                    self._output(message["output"].get("data"))
                elif kind == "process_completed":
                    output = message.get("output") or {}
                    if not message.get("success", True):
                        self._finish(error=AppError(output.get("error") or "the app raised an error it does not show"))
                    elif "data" not in output:
                        self._finish(error=CancelledError())       # /cancel's empty completion
                    else:
                        self._output(output["data"])
                        self._finish(answer=self.endpoint.answer(output["data"]))
                    # read on to close_stream: the server ends this stream once the session has no other request


class Session:
    """One attendee's browser session, talking Gradio's queue protocol (sse_v3) over httpx as the browser's client
    does: a request joins the queue (POST queue/join) and its messages are read off the session's event stream
    (GET queue/data) by a thread that blocks on it, as a browser's EventSource gets each message when it arrives; the
    session's heartbeat stream is held open like a tab's. Why not gradio_client: its result consumer polls its message
    queue every 50 ms, and a cancel-checker thread of its own wakes every 50 ms per request; a lone click ended on
    those 50 ms ticks, and 30 simulated attendees on the app's own cores took CPU the app did not get. The files of
    an answer are fetched over the one kept-alive connection, as a browser does (gradio_client's download opens a new
    HTTP client for every file: about 0.1 s a file on 2 busy cores, more than the app spends making it). Previews
    are not fetched, only the final answer's files. Like a browser, it waits for an answer (up to HTTP_TIMEOUT_S to
    connect, READ_TIMEOUT_S between two bytes of an answer or a stream; the app's heartbeats come every 15 s): on busy
    cores a client that gave up after 5 s (gradio_client's default) counted a request the app had queued as failed,
    and the attendee's next click found its first run still going. One request at a time per session, as the room
    and the bench send them; a request submitted before the last one ended waits for its stream to close."""

    def __init__(self, url: str):
        import httpx

        timeout = httpx.Timeout(HTTP_TIMEOUT_S, read=READ_TIMEOUT_S)     # read: also the gap between two SSE events
        # One client, its cookies kept: a sticky proxy's cookie (deploy/haproxy.cfg) routes the session to one front.
        self.http = httpx.Client(timeout=timeout)
        self.session_hash = uuid.uuid4().hex
        self.fetched_bytes = 0
        self._last: Job | None = None
        self._closed = threading.Event()
        self._heartbeat_response = None
        try:
            config = self._json(url.rstrip("/") + "/config")
            # as gradio_client's src_prefixed: the URL given (a proxy's), not the root the app believes it has
            self.root = url.rstrip("/") + "/" + config.get("api_prefix", "").strip("/") + "/"
            self.config, self.info = config, self._json(self.root + "info?serialize=False")
        except BaseException:
            self.http.close()
            raise
        self._endpoints: dict[str, Endpoint] = {}
        self._heartbeat = threading.Thread(target=self._hold_heartbeat, daemon=True, name="clipdiff-heartbeat")
        if config.get("connect_heartbeat", True):
            self._heartbeat.start()

    def _json(self, url: str) -> dict:
        response = self.http.get(url)
        response.raise_for_status()
        return response.json()

    def endpoint(self, api_name: str) -> Endpoint:
        if api_name not in self._endpoints:
            self._endpoints[api_name] = Endpoint.from_app(self.config, self.info, api_name)
        return self._endpoints[api_name]

    def submit(self, *args, api_name: str) -> Job:
        endpoint = self.endpoint(api_name)
        self._last = Job(self, endpoint, endpoint.inputs(args), self._last)
        return self._last

    def join(self, endpoint: Endpoint, data: list) -> str:
        """Queue a request; its event id. A refusal (the queue full: 503; a validator's 422) raises AppError."""
        response = self.http.post(self.root + "queue/join", json={
            "data": data, "event_data": None, "fn_index": endpoint.fn_index, "trigger_id": endpoint.trigger_id,
            "session_hash": self.session_hash})
        if response.status_code != 200:
            try:
                detail = response.json().get("detail")
            except ValueError:
                detail = None
            raise AppError(f"{response.status_code}: {detail or response.text[:200]}")
        return response.json()["event_id"]

    def post_cancel(self, endpoint: Endpoint, event_id: str) -> None:
        self.http.post(self.root + "cancel", json={"fn_index": endpoint.fn_index, "session_hash": self.session_hash,
                                                   "event_id": event_id}).raise_for_status()

    def _hold_heartbeat(self) -> None:
        """The tab's heartbeat, as a browser holds it: when it closes, the app takes the tab as gone (cancels its
        pending requests, lets its gr.State go). Blocks on the stream (a line every 15 s) until close() shuts its
        socket."""
        try:
            with self.http.stream("GET", self.root + f"heartbeat/{self.session_hash}") as response:
                self._heartbeat_response = response
                if self._closed.is_set():
                    return
                for _ in response.iter_lines():
                    pass
        except Exception:   # noqa: BLE001 (closed by close(), or the app went away: either way, no heartbeat)
            pass

    def fetch_files(self, answer):
        """GET every file an answer names (a gallery's PNGs), as the page shows them; the answer itself."""
        from gradio_client import utils

        def fetch(file: dict) -> dict:
            url = self.root + "file=" + utils.encode_file_path(file["path"])   # as gradio_client
            response = self.http.get(url, follow_redirects=True)
            response.raise_for_status()
            self.fetched_bytes += len(response.content)
            return file

        return utils.traverse(answer, fetch, utils.is_file_obj_with_meta)

    def predict(self, *args, api_name: str):
        """An answer, its files fetched: submit to the last image seen."""
        return self.fetch_files(self.submit(*args, api_name=api_name).result())

    def close(self) -> None:
        self._closed.set()
        response = self._heartbeat_response
        if response is not None:
            # Shut the heartbeat's socket: its thread, blocked in a read, wakes up and ends, and the app sees the
            # tab go. (Closing the response from this thread does not wake that read: tried.)
            stream = response.extensions.get("network_stream")
            sock = stream.get_extra_info("socket") if stream is not None else None
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        if self._heartbeat.is_alive():
            self._heartbeat.join(timeout=5)
        self.http.close()


@dataclass
class Attendee:
    latencies: list[float] = field(default_factory=list)
    images: int = 0
    errors: list[str] = field(default_factory=list)


class Doors:
    """The room opens when every attendee is connected (their Client made) and closes duration_s later."""

    def __init__(self, users: int):
        self.everyone_in = threading.Barrier(users + 1)
        self.closes_at = math.inf

    def open(self, duration_s: float) -> float:
        self.everyone_in.wait()
        opened = time.monotonic()
        self.closes_at = opened + duration_s
        return opened

    def is_open(self) -> bool:
        return time.monotonic() < self.closes_at


@dataclass
class RoomReport:
    backend: str
    replicas: int
    users: int
    think_s: float
    duration_s: float
    images_per_s: float
    p50_s: float | None
    p95_s: float | None
    errors: int
    requests: int
    images: int
    wall_s: float
    steps: int | None
    sampler: str | None
    error_examples: list[str]
    url: str
    machine: dict | None = None                 # CPU, git commit, date (measured.machine())
    # Where the machine's CPU went while the room was open: the simulated attendees (this process) and every process
    # (the app, its replicas, the attendees); on one machine the attendees' share is CPU a real room's laptops pay.
    clients_cpu_s: float | None = None
    machine_cpu_s: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (0-100), linear between order statistics (numpy's default); None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low, high = math.floor(pos), math.ceil(pos)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def think(rng: random.Random, think_s: float, doors: Doors) -> None:
    """An exponentially distributed pause with mean think_s (0: none), cut short when the room closes."""
    pause = rng.expovariate(1 / think_s) if think_s > 0 else 0.0
    time.sleep(max(0.0, min(pause, doors.closes_at - time.monotonic())))


def attend(url: str, index: int, think_s: float, doors: Doors, requests_cap: int | None, steps: int, sampler: str,
           seed: int, out: Attendee) -> None:
    """One attendee: generate, think, repeat while the room is open (or until requests_cap requests are made)."""
    rng = random.Random(seed * 1_000_003 + index)
    client = None
    try:
        client = Session(url)
    except Exception as e:   # noqa: BLE001 (an attendee who cannot connect is one error, not a crash)
        out.errors.append(f"connect: {type(e).__name__}: {str(e)[:200]}")
    doors.everyone_in.wait()
    if client is None:
        return
    try:
        made = 0
        # Each attendee thinks first too: arrivals from the start rather than a stampede at the opening, whose
        # queue of `users` requests only the first seconds would see; the figures are the room's steady state.
        think(rng, think_s, doors)
        while doors.is_open() and (requests_cap is None or made < requests_cap):
            made += 1
            args = [rng.choice(PROMPTS), 2.0, steps, sampler, rng.randrange(2**31 - 1), IMAGES_PER_REQUEST]
            t0 = time.monotonic()
            try:
                gallery, status, *_ = client.predict(*args, api_name="/generate")
                if len(gallery) != IMAGES_PER_REQUEST or "Done" not in status:
                    raise RuntimeError(f"unexpected answer: {len(gallery)} images, {status[:120]!r}")
                out.latencies.append(time.monotonic() - t0)
                out.images += len(gallery)
            except Exception as e:   # noqa: BLE001 (every failure is counted and one example kept)
                out.errors.append(f"{type(e).__name__}: {str(e)[:200]}")
            think(rng, think_s, doors)
    finally:
        client.close()


def run_room(url: str, users: int, think_s: float, duration_s: float, backend: str = "?", replicas: int = 0,
             steps: int | None = None, sampler: str | None = None, seed: int = 0,
             requests_per_user: int | None = None) -> RoomReport:
    """users attendees against url for duration_s (the last requests are waited for); the room's figures."""
    from ..pipeline import DEFAULT_SAMPLER, DEFAULT_STEPS

    steps, sampler = steps or DEFAULT_STEPS, sampler or DEFAULT_SAMPLER
    attendees = [Attendee() for _ in range(users)]
    doors = Doors(users)
    threads = [threading.Thread(target=attend, args=(url, i, think_s, doors, requests_per_user, steps, sampler, seed, a),
                                daemon=True) for i, a in enumerate(attendees)]
    for t in threads:
        t.start()
    clients_before, machine_before = resource.getrusage(resource.RUSAGE_SELF), machine_busy_s()
    opened = doors.open(duration_s)
    for t in threads:
        t.join()
    wall = time.monotonic() - opened
    clients_after, machine_after = resource.getrusage(resource.RUSAGE_SELF), machine_busy_s()
    clients_cpu = (clients_after.ru_utime + clients_after.ru_stime) - (clients_before.ru_utime + clients_before.ru_stime)
    machine_cpu = None if machine_before is None or machine_after is None else machine_after - machine_before
    latencies = [x for a in attendees for x in a.latencies]
    errors = [e for a in attendees for e in a.errors]
    images = sum(a.images for a in attendees)
    return RoomReport(backend=backend, replicas=replicas, users=users, think_s=think_s, duration_s=duration_s,
                      images_per_s=round(images / wall, 3) if wall > 0 else 0.0,
                      p50_s=_round(percentile(latencies, 50)), p95_s=_round(percentile(latencies, 95)),
                      errors=len(errors), requests=len(latencies) + len(errors), images=images, wall_s=round(wall, 2),
                      steps=steps, sampler=sampler, error_examples=sorted(set(errors))[:5], url=url,
                      machine=machine(), clients_cpu_s=round(clients_cpu, 1),
                      machine_cpu_s=None if machine_cpu is None else round(machine_cpu, 1))


def machine_busy_s() -> float | None:
    """CPU seconds this machine has spent busy since boot, all cores (/proc/stat: everything but idle and iowait);
    None where there is no /proc."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except (OSError, IndexError):
        return None
    ticks = [int(f) for f in fields[:8]]
    busy = sum(ticks) - ticks[3] - ticks[4]
    return busy / os.sysconf("SC_CLK_TCK")


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(backend: str, replicas: int, extra: list[str], ready_timeout_s: float = 600) -> tuple[subprocess.Popen, str]:
    """python app.py --backend ... on a free loopback port; returns once it answers HTTP."""
    import urllib.request

    port = free_port()
    command = [sys.executable, str(REPO_ROOT / "app.py"), "--backend", backend, "--port", str(port), *extra]
    if backend == "ray":
        command += ["--replicas", str(replicas)]
    process = subprocess.Popen(command, cwd=REPO_ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + ready_timeout_s
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"app.py exited with {process.returncode} before answering")
        try:
            with urllib.request.urlopen(url + "gradio_api/info", timeout=5):
                return process, url
        except OSError:
            if time.monotonic() > deadline:
                stop_app(process)
                raise RuntimeError(f"app.py did not answer within {ready_timeout_s:.0f} s") from None
            time.sleep(0.5)


def stop_app(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m clipdiff room", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=("local", "ray"), default="local")
    parser.add_argument("--replicas", type=int, default=2, help="Sampler replicas (--backend ray; app.py's default)")
    parser.add_argument("--users", type=int, default=8, help="simulated attendees, one session each")
    parser.add_argument("--think-s", type=float, default=20.0, help="mean think time between requests (exponential)")
    parser.add_argument("--duration", type=float, default=120.0, help="seconds the room stays open")
    parser.add_argument("--json", type=Path, default=None, help="write the report here")
    parser.add_argument("--url", default=None, help="measure a running app instead of starting one")
    parser.add_argument("--app-args", default="", help="more app.py flags when starting it, e.g. \"--concurrency 16\"; "
                        "one flag alone takes an '=': --app-args=--fast")
    parser.add_argument("--steps", type=int, default=None, help="sampler steps (default: the app's)")
    parser.add_argument("--sampler", default=None, help="sampler (default: the app's)")
    parser.add_argument("--requests-per-user", type=int, default=None, help="stop each attendee after this many")
    parser.add_argument("--seed", type=int, default=0, help="seeds the prompts, image seeds and think times")
    args = parser.parse_args(argv)
    if args.users < 1 or args.replicas < 1 or args.duration <= 0 or args.think_s < 0:
        parser.error("--users and --replicas must be at least 1, --duration positive, --think-s not negative")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    process = None
    url = args.url
    if url is None:
        process, url = start_app(args.backend, args.replicas, shlex.split(args.app_args))
    try:
        report = run_room(url, args.users, args.think_s, args.duration, args.backend,
                          args.replicas if args.backend == "ray" else 1, args.steps, args.sampler, args.seed,
                          args.requests_per_user)
    finally:
        if process is not None:
            stop_app(process)
    text = json.dumps(report.to_dict(), indent=2)
    print(text)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    return 0
