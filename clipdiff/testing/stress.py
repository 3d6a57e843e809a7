"""The hardening runs against a live app at `url`, each bounded and stopping by itself, each returning
its figures: fuzz (hypothesis drives every endpoint through gradio_client), load (many clients at once), cancel
(a cancelled run stops within a sampler step, the next starts at once), memory (RSS growth over many generations),
queue_full (requests past the queue are told so at once), wall_load (a room publishing to the wall and reading
it). benchmarks/stress.py runs them long against a real app; tests/test_hardening.py and tests/test_tab_wall.py run
short ones in the suite.
"""
from __future__ import annotations

import functools
import json
import math
import re
import tempfile
import threading
import time
from pathlib import Path

from .live import proc_memory_mb

PROMPT = "A deep red rose flower"
SWITCH = ("A round white daisy with a yellow center", "An orange sunflower with a big brown center")
UNICODE_PROMPTS = ["[a daisy:a rose:0.5]", "a [red] rose", "[[a:b:1]:c:0.5]", "[a:b:7]", "[a:b:-1]", "]:[",
                   "", "   \n\t ", "x" * 10_001, "🌹" * 300, "\u202eright-to-left\u202c", "ורד אדום", "وردة حمراء",
                   "\x00\x07\x1b[31mred\x7f", "a " * 200, "\n".join(["rose"] * 1000), "e\u0301\u200d👩‍👩‍👧",
                   "<script>alert(1)</script>", "../../etc/passwd", "%s%n{0}", "\ufeff\u00a0\u2028\u2029"]


# -- fuzz ---------------------------------------------------------------------------------------------------------
def fuzz(url: str, cases: int = 500, unhandled=lambda: [], seed: int | None = 0, tmp: Path | None = None,
         only_wall: bool = False) -> dict:
    """Property: whatever an API client sends, the answer is a result or an error with a message, and the
    server raises nothing but clean refusals. `unhandled()` returns the server's unhandled errors so far.
    only_wall: the room wall's endpoints alone (an app with --wall), after one generation to publish."""
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import strategies as st
    from PIL import Image, PngImagePlugin

    tmp = Path(tmp or tempfile.mkdtemp(prefix="clipdiff-fuzz-"))
    client = Client(url, verbose=False)
    tally = {"cases": 0, "ok": 0, "refused": 0}
    messages: dict[str, int] = {}

    junk = st.one_of(st.integers(-10**15, 10**15), st.floats(allow_nan=False, allow_infinity=False), st.booleans(),
                     st.none(), st.text(max_size=20), st.lists(st.integers(), max_size=3),
                     st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
    text = st.one_of(st.text(max_size=300), st.sampled_from(UNICODE_PROMPTS),
                     st.lists(st.text(max_size=20), max_size=40).map("\n".join), junk)
    small_steps = st.one_of(st.integers(1, 3), st.sampled_from([0, -1, 401, 10**9, -10**9, 2.5, "3", "x", None]),
                            junk)
    number = st.one_of(st.floats(-30, 30), st.integers(-10, 10), st.sampled_from([1e308, -1e308, 2**63, -1]), junk)
    seeds = st.one_of(st.integers(-10, 2**40), st.sampled_from([-1, 2**31 - 1, 2**31, None, "", "7"]), junk)
    sampler = st.one_of(st.sampled_from(["ddim", "ddpm", "dpmsolver", "euler", "DDIM", ""]), junk)

    def call(api: str, *args):
        tally["cases"] += 1
        try:
            client.predict(*args, api_name=api)
            tally["ok"] += 1
        except AppError as e:
            message = str(e).strip()
            assert message and message != "Error raised.", f"{api}{args!r:.300}: an error without a message"
            tally["refused"] += 1
            key = message[:60]
            messages[key] = messages.get(key, 0) + 1
        problems = unhandled()
        assert not problems, f"{api}{args!r:.300} -> unhandled server error(s): {problems}"

    def png_with(params) -> str:
        info = PngImagePlugin.PngInfo()
        info.add_text("clipdiff", params if isinstance(params, str) else json.dumps(params))
        path = tmp / f"p{tally['cases']}.png"
        Image.new("RGB", (8, 8), (200, 30, 40)).save(path, pnginfo=info)
        return handle_file(str(path))

    params = st.one_of(st.fixed_dictionaries({}, optional={
        "prompt": text, "w": number, "steps": small_steps, "sampler": sampler, "seed": seeds,
        "negative_prompt": text, "switch_to": text, "switch_at": number}),
        st.text(max_size=50), st.lists(junk, max_size=3).map(json.dumps))
    negative = st.one_of(st.just(""), text)
    photo_or_not = st.sampled_from([None, "photo", "not a picture"]).map(lambda kind: None if kind is None else
                                                                          handle_file(str(photo_file() if kind == "photo"
                                                                                          else not_a_picture(tmp))))
    fractions = st.one_of(st.text(max_size=40), st.sampled_from(["0, 0.5, 1", "nan", "-1 2 0.5", ",,", "1e999"]),
                          st.lists(st.floats(-1, 2), max_size=12).map(lambda xs: ", ".join(map(str, xs))), junk)
    plans = [  # (share of the cases, strategy, call); the cheap endpoints get most of them
        (0.45, st.tuples(text), lambda a: call("/tokens", *a)),
        (0.15, st.tuples(params), lambda a: call("/load_params", png_with(a[0]))),
        (0.14, st.tuples(text, number, small_steps, sampler, seeds, st.one_of(st.integers(-2, 10), junk), negative),
         lambda a: call("/generate", *a)),
        (0.06, st.tuples(text, st.one_of(st.text(max_size=40), st.sampled_from(["1e999, nan", "inf -inf", ",,,"])),
                         seeds, small_steps, sampler, negative), lambda a: call("/sweep", *a)),
        (0.04, st.tuples(text, st.one_of(st.just(""), text), fractions, seeds, number, small_steps, sampler),
         lambda a: call("/prompt_edit", *a)),
        (0.04, st.tuples(text, seeds, number, small_steps, sampler), lambda a: call("/word_importance", *a)),
        (0.05, st.tuples(text, text, st.one_of(st.integers(-5, 20), junk), number, seeds, small_steps, sampler),
         lambda a: call("/interpolate", *a)),
        (0.05, st.tuples(text, st.just(None), junk, st.one_of(st.sampled_from(["texts", "images"]), junk)),
         lambda a: call("/similarity", *a)),
        (0.05, st.tuples(st.one_of(st.sampled_from(["umap", "umap-centered", "pca"]), junk), text, st.just(None),
                         junk, junk), lambda a: call("/embed_map", *a)),
        (0.05, st.tuples(junk), lambda a: call("/playback_gif", *a)),
        (0.03, st.tuples(text, text, number, number, seeds, small_steps, sampler), lambda a: call("/mix", *a)),
        (0.02, st.tuples(), lambda a: call("/rank")),
        (0.03, st.tuples(photo_or_not, junk, st.one_of(st.integers(-10, 1000), junk), seeds),
         lambda a: call("/forward_noise", *a)),
        (0.03, st.tuples(photo_or_not, junk, text, number, number, seeds, small_steps, sampler, negative),
         lambda a: call("/edit_photo", *a)),
        (0.02, st.tuples(photo_or_not, junk, text, small_steps), lambda a: call("/invert_photo", *a)),
    ]
    item_ids = st.one_of(text, st.sampled_from(["0" * 32, "f" * 32, "0" * 31 + "g", "../wall.jsonl", "0" * 33]))
    wall_plans = [
        (0.01, st.tuples(), lambda a: call("/publish_best")),
        (0.01, st.tuples(), lambda a: call("/publish_all")),
        (0.01, st.tuples(), lambda a: call("/wall")),
        (0.01, st.tuples(item_ids, text), lambda a: call("/remove_from_wall", *a)),
        (0.01, st.tuples(item_ids), lambda a: call("/try_this", *a)),
    ]
    if only_wall:
        client.predict(PROMPT, 2.0, 2, "ddim", 1, 2, api_name="/generate")    # something to publish
        plans = [(0.2, strategy, run) for _, strategy, run in wall_plans]
    else:
        plans += wall_plans
    t0 = time.perf_counter()
    try:
        for share, strategy, run in plans:
            n = max(1, math.ceil(cases * share))
            config = settings(max_examples=n, deadline=None, database=None, derandomize=seed is not None,
                              suppress_health_check=list(HealthCheck), phases=[Phase.generate, Phase.shrink])
            given(args=strategy)(config(one_case(run)))()
        # and the app still answers a normal request
        gallery, status, _, *_ = client.predict(PROMPT, 2.0, 2, "ddim", 1, 1, api_name="/generate")
        assert "Done" in status and len(gallery) == 1
    finally:
        client.close()
    top = sorted(messages.items(), key=lambda kv: -kv[1])[:8]
    return {**tally, "seconds": round(time.perf_counter() - t0, 1), "top_refusals": top}


@functools.lru_cache(maxsize=1)
def photo_file() -> Path:
    """A small photo for the endpoints that take one (written once per process)."""
    from PIL import Image

    path = Path(tempfile.mkdtemp(prefix="clipdiff-photo-")) / "photo.png"
    Image.new("RGB", (48, 40), (230, 200, 40)).save(path)
    return path


def not_a_picture(folder: Path) -> Path:
    path = folder / "not-a-picture.png"
    path.write_bytes(b"GIF89a but not really")
    return path


def one_case(run):
    """A test function for hypothesis's @given (which refuses default arguments) that calls run."""
    def case(args):
        run(args)
    return case


def raw_call(url: str, api: str, data: list, timeout: float = 120) -> tuple[str, object]:
    """What gradio_client cannot send (NaN, inf, lone surrogates): JSON posted to /gradio_api/call/API.
    Returns ("complete", outputs) or ("error", message) or ("http", status)."""
    import urllib.error
    import urllib.request

    base = url.rstrip("/")
    body = json.dumps({"data": data}).encode()   # Python writes NaN and Infinity; the server's parser reads them
    request = urllib.request.Request(f"{base}/gradio_api/call/{api}", body, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            event_id = json.loads(r.read())["event_id"]
        with urllib.request.urlopen(f"{base}/gradio_api/call/{api}/{event_id}", timeout=timeout) as r:
            stream = r.read().decode()
    except urllib.error.HTTPError as e:
        return "http", e.code
    events = re.findall(r"event: (\w+)\ndata: (.*)", stream)
    kind, data_line = events[-1]
    payload = json.loads(data_line) if data_line not in ("", "null") else None
    if kind == "error":
        return "error", (payload or {}).get("error") if isinstance(payload, dict) else payload
    return kind, payload


# -- load, cancel, memory, queue -----------------------------------------------------------------------------------
def generate_once(client, seed: int, steps: int = 2, timeout: float = 300) -> float:
    t0 = time.perf_counter()
    job = client.submit(PROMPT, 2.0, steps, "ddim", seed, 1, api_name="/generate")
    gallery, status, *_ = job.result(timeout=timeout)
    if "Done" not in status or len(gallery) != 1:
        raise RuntimeError(f"unexpected result: {status[:200]!r}")
    return time.perf_counter() - t0


# What load() may send, each a request and what its answer must hold: the sampling runs of the Generate, Debug and
# Photo tabs.
LOAD_CALLS = {
    "/generate": (lambda seed, steps: (PROMPT, 2.0, steps, "ddim", seed, 1),
                  lambda out: "Done" in out[1] and len(out[0]) == 1),
    "/prompt_edit": (lambda seed, steps: (*SWITCH, "0, 0.5, 1", seed, 2.0, steps, "ddim"),
                     lambda out: "Done" in out[2] and len(out[1]) == 3),
    "/word_importance": (lambda seed, steps: (PROMPT, seed, 2.0, steps, "ddim"),
                         lambda out: "Done" in out[3] and out[2]["words"] == PROMPT.split()),
    "/edit_photo": (lambda seed, steps: (_upload(photo_file()), False, PROMPT, 0.5, 2.0, seed, steps, "ddim", ""),
                    lambda out: "Done" in out[2] and len(out[0]) == 2),
    "/forward_noise": (lambda seed, steps: (_upload(photo_file()), False, 100, seed),
                       lambda out: "At t = 100" in out[3]),
}


def _upload(path: Path):
    from gradio_client import handle_file

    return handle_file(str(path))


def request_once(client, api: str, seed: int, steps: int = 2, timeout: float = 300) -> float:
    """One LOAD_CALLS request, its answer checked; the seconds it took."""
    args, answered = LOAD_CALLS[api]
    t0 = time.perf_counter()
    out = client.submit(*args(seed, steps), api_name=api).result(timeout=timeout)
    if not answered(out):
        raise RuntimeError(f"{api}: unexpected result: {str(out)[:200]!r}")
    return time.perf_counter() - t0


def load(url: str, clients: int = 16, requests: int = 10, steps: int = 2, timeout: float = 900,
         endpoints: tuple[str, ...] = ("/generate",)) -> dict:
    """`clients` sessions at once, each sending `requests` runs in turn (client i's r-th to endpoint i + r, round
    the endpoints); every failure counted."""
    from gradio_client import Client

    latencies, errors, lock = [], [], threading.Lock()

    def worker(index: int) -> None:
        try:
            client = Client(url, verbose=False)
        except Exception as e:  # noqa: BLE001 - counted, not raised
            with lock:
                errors.append(f"connect: {type(e).__name__}: {e}")
            return
        try:
            for r in range(requests):
                try:
                    api = endpoints[(index + r) % len(endpoints)]
                    seconds = request_once(client, api, 1000 * index + r, steps, timeout)
                    with lock:
                        latencies.append(seconds)
                except Exception as e:  # noqa: BLE001
                    with lock:
                        errors.append(f"{type(e).__name__}: {str(e)[:200]}")
        finally:
            client.close()

    t0 = time.perf_counter()
    hung = run_together(worker, clients, timeout)
    latencies.sort()
    return {"clients": clients, "requests": clients * requests, "answered": len(latencies),
            "failures": len(errors) + hung, "hung_clients": hung, "wall_s": round(time.perf_counter() - t0, 1),
            "median_s": round(latencies[len(latencies) // 2], 2) if latencies else None,
            "p95_s": round(latencies[math.ceil(0.95 * len(latencies)) - 1], 2) if latencies else None,
            "errors": errors[:5]}


def wall_load(url: str, attendees: int = 30, reads: int = 3, steps: int = 1, timeout: float = 600) -> dict:
    """A room on the wall (an app with --wall): `attendees` sessions at once, each generating one image, publishing
    it, then reading the wall `reads` times; every failure counted, and each attendee's own item must be on the wall
    it reads after publishing."""
    from gradio_client import Client

    publish_s, read_s, errors, lock = [], [], [], threading.Lock()

    def attendee(index: int) -> None:
        prompt = f"{PROMPT} number {index}"
        try:   # a room's clients all connect at once: patient, and reading the wall's captions, not its files
            client = Client(url, verbose=False, download_files=False, httpx_kwargs={"timeout": 120})
        except Exception as e:  # noqa: BLE001 - counted, not raised
            with lock:
                errors.append(f"connect: {type(e).__name__}: {e}")
            return
        try:
            _, status, *_ = client.predict(prompt, 2.0, steps, "ddim", index, 1, api_name="/generate")
            if "Done" not in status:
                raise RuntimeError(f"generate: {status[:200]!r}")
            t0 = time.perf_counter()
            status, item_id = client.predict(api_name="/publish_best")
            with lock:
                publish_s.append(time.perf_counter() - t0)
            if "Published" not in status or len(item_id) != 32:
                raise RuntimeError(f"publish: {status[:200]!r}")
            for _ in range(reads):
                t0 = time.perf_counter()
                gallery, _ = client.predict(api_name="/wall")
                with lock:
                    read_s.append(time.perf_counter() - t0)
                if not any(str(g.get("caption", "")).startswith(prompt + " |") for g in gallery):
                    raise RuntimeError(f"attendee {index}'s picture is not on the wall it read")
        except Exception as e:  # noqa: BLE001
            with lock:
                errors.append(f"{type(e).__name__}: {str(e)[:200]}")
        finally:
            client.close()

    t0 = time.perf_counter()
    hung = run_together(attendee, attendees, timeout)

    def p95(xs):
        return round(sorted(xs)[math.ceil(0.95 * len(xs)) - 1], 2) if xs else None
    return {"attendees": attendees, "published": len(publish_s), "reads": len(read_s),
            "failures": len(errors) + hung, "hung": hung, "wall_s": round(time.perf_counter() - t0, 1),
            "publish_p95_s": p95(publish_s), "read_p95_s": p95(read_s), "errors": errors[:5]}


def cancel(url: str, warm_steps: int = 3) -> dict:
    """Cancel a long run mid-way; time until a 1-step follow-up is done, against the long run's step time."""
    from gradio_client import Client

    client, other = Client(url, verbose=False), Client(url, verbose=False)
    try:
        generate_once(other, 0, 1)                                  # warm: first-call costs out of the figure
        long = client.submit(PROMPT, 2.0, 400, "ddim", 1, 4, api_name="/generate")
        t0 = time.perf_counter()
        while len(long.outputs()) < warm_steps:
            if long.done() or time.perf_counter() - t0 > 120:
                raise RuntimeError("no previews from the long run")
            time.sleep(0.01)
        step_s = (time.perf_counter() - t0) / len(long.outputs())
        long.cancel()
        cancelled_at, seen_at_cancel = time.perf_counter(), len(long.outputs())
        follow_up_s = generate_once(other, 1, 1)
        time.sleep(max(0.5, 3 * step_s))
        extra_steps = len(long.outputs()) - seen_at_cancel
        return {"step_s": round(step_s, 3), "follow_up_done_s": round(time.perf_counter() - cancelled_at - max(
            0.5, 3 * step_s), 3), "follow_up_alone_s": round(follow_up_s, 3),
            "steps_after_cancel": extra_steps, "steps_left_uncancelled": 400 - seen_at_cancel}
    finally:
        client.close()
        other.close()


def memory(url: str, pid: int, generations: int = 300, warmup: int = 20, steps: int = 2) -> dict:
    """RSS of the app's process after `warmup` generations and after `generations`, one session."""
    from gradio_client import Client

    client = Client(url, verbose=False)
    try:
        t0 = time.perf_counter()
        for k in range(generations):
            if k == warmup:
                baseline = proc_memory_mb(pid)["VmRSS"]
            generate_once(client, k, steps)
        final = proc_memory_mb(pid)["VmRSS"]
    finally:
        client.close()
    return {"generations": generations, "baseline_after": warmup, "rss_baseline_mb": round(baseline, 1),
            "rss_final_mb": round(final, 1), "growth_mb": round(final - baseline, 1),
            "seconds": round(time.perf_counter() - t0, 1)}


def queue_full(url: str, max_queue: int, extra: int = 6) -> dict:
    """Fill the queue with long runs; the requests beyond it must be refused at once with a clear message."""
    from gradio_client import Client
    from gradio_client.utils import QueueError

    clients = [Client(url, verbose=False) for _ in range(max_queue + 1 + extra)]
    jobs, refused, refusal_s, messages = [], 0, [], set()
    try:
        for c in clients:
            jobs.append((time.perf_counter(), c.submit(PROMPT, 2.0, 400, "ddim", 1, 4, api_name="/generate")))
            time.sleep(0.05)
        deadline = time.perf_counter() + 60
        pending = list(jobs)
        while pending and time.perf_counter() < deadline:
            for item in list(pending):
                started, job = item
                if job.done():
                    pending.remove(item)
                    error = job.exception()
                    if error is not None:
                        refused += isinstance(error, QueueError)
                        messages.add(str(error))
                        refusal_s.append(time.perf_counter() - started)
            if refused >= extra:
                break
            time.sleep(0.05)
    finally:
        for _, job in jobs:
            job.cancel()
        for c in clients:
            c.close()
    return {"max_queue": max_queue, "sent": len(jobs), "refused": refused, "messages": sorted(messages),
            "slowest_refusal_s": round(max(refusal_s), 2) if refusal_s else None}


def run_together(target, n: int, timeout: float) -> int:
    """target(0..n-1) in n daemon threads at once, joined within timeout seconds in all: how many still hang."""
    threads = [threading.Thread(target=target, args=(i,), daemon=True) for i in range(n)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=max(1.0, timeout - (time.perf_counter() - t0)))
    return sum(t.is_alive() for t in threads)
