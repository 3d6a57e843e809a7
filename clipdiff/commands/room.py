"""python -m clipdiff room: a simulated workshop room against a live app, to size a deployment.

    python -m clipdiff room --backend ray --replicas 2 --users 30 --think-s 20 --duration 300 --json room.json
    python -m clipdiff room --url http://127.0.0.1:8080/ --backend ray --replicas 4 --users 100 ...   # an app you run

Each of --users attendees is one gradio_client session: it asks /generate for 4 images (the app's default sampler
and steps), waits for them, thinks for an exponentially distributed time with mean --think-s (also before its first
request, so arrivals are spread from the start), and repeats until
--duration is over (requests still running then are waited for and counted). Without --url the command starts
`python app.py --backend ... --replicas ...` on a free 127.0.0.1 port, measures, and stops it.

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
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .measured import machine

REPO_ROOT = Path(__file__).resolve().parents[2]
PROMPTS = ("A deep red rose flower", "A round white daisy with a yellow center",
           "An orange sunflower with a big brown center", "A pink flower with many petals")
IMAGES_PER_REQUEST = 4
HTTP_TIMEOUT_S = 60
READ_TIMEOUT_S = 600


class Session:
    """One attendee's browser session through gradio_client, fetching the files of an answer as a browser does: over
    one kept-alive connection. (gradio_client's own download opens a new HTTP client, TLS set-up included, for every
    file: about 0.1 s a file on 2 busy cores, more than the app spends making it, and the simulated room runs on
    the app's cores.) Previews are not fetched, only the final answer's files. Like a browser, it waits for an answer
    (up to HTTP_TIMEOUT_S to connect, READ_TIMEOUT_S for data) where gradio_client's own requests give up after 5 s: on busy cores a request the app
    had already queued was counted as failed, and the attendee's next click found its first run still going."""

    def __init__(self, url: str):
        import httpx
        from gradio_client import Client

        timeout = httpx.Timeout(HTTP_TIMEOUT_S, read=READ_TIMEOUT_S)     # read: also the gap between two SSE events
        self.client = Client(url, verbose=False, download_files=False, httpx_kwargs={"timeout": timeout})
        self.http = httpx.Client(headers=self.client.headers, cookies=self.client.cookies, timeout=timeout)
        self.fetched_bytes = 0

    def submit(self, *args, api_name: str):
        return self.client.submit(*args, api_name=api_name)

    def fetch_files(self, answer):
        """GET every file an answer names (a gallery's PNGs), as the page shows them; the answer itself."""
        from gradio_client import utils

        def fetch(file: dict) -> dict:
            url = self.client.src_prefixed + "file=" + utils.encode_file_path(file["path"])   # as gradio_client
            response = self.http.get(url, follow_redirects=True)
            response.raise_for_status()
            self.fetched_bytes += len(response.content)
            return file

        return utils.traverse(answer, fetch, utils.is_file_obj_with_meta)

    def predict(self, *args, api_name: str):
        """An answer, its files fetched: submit to the last image seen."""
        return self.fetch_files(self.submit(*args, api_name=api_name).result())

    def close(self) -> None:
        self.http.close()
        self.client.close()


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
    parser.add_argument("--app-args", default="", help="more app.py flags when starting it, e.g. \"--concurrency 16\"")
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
