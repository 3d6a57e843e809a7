"""The app on a free loopback port: in this process (the tests: they can reach into it), or as `python app.py` in
a process of its own (the benchmarks: they measure it as a user runs it). And how to read a server's console for
errors that were not clean refusals."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

REPO_ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 300
# gradio's own refusals of a malformed request: clear messages, not crashes
GRADIO_REFUSALS = ("Error", "InvalidPathError", "ComponentProcessingError")
# plain ValueErrors of gradio's: a request with too few values; a file URL its SSRF guard refuses to fetch
GRADIO_REFUSAL_MESSAGES = ("didn't receive enough input values", "failed validation")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LocalApp:
    demo: object          # the gr.Blocks
    url: str


@contextmanager
def app_in_this_process(models, concurrency: int = 1, max_queue: int | None = None, auth=None,
                        **build_options) -> Iterator[LocalApp]:
    """The real app (clipdiff.app's build_app and serve, with their defaults unless given) on a free loopback
    port, closed on exit. build_options go to build_app: preview_every_s=0 sends a preview after every sampler step,
    so counts do not depend on the machine's speed; session_ttl_s=1 lets sessions expire at once."""
    from ..app.blocks import build_app, serve

    demo = build_app(models, concurrency=concurrency, **build_options)
    port = free_port()
    serve(demo, port=port, concurrency=concurrency, prevent_thread_lock=True, quiet=True, auth=auth,
          **({} if max_queue is None else {"max_queue": max_queue}))
    try:
        yield LocalApp(demo, f"http://127.0.0.1:{port}/")
    finally:
        demo.close()


def proc_memory_mb(pid: int) -> dict[str, float]:
    """VmRSS (now) and VmHWM (peak) of a process, in MiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) / 1024
    return out


class AppProcess:
    """`python app.py` on a free loopback port, in its own process group, ended on exit whatever happens."""

    def __init__(self, unet: str, clip: str, atlas: str, device: str, log_dir: Path, threads: int | None = None,
                 extra_args: tuple[str, ...] = ()):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.cmd = [sys.executable, str(REPO_ROOT / "app.py"), "--host", "127.0.0.1", "--port", str(self.port),
                    "--unet", unet, "--clip", clip, "--atlas", atlas, "--device", device, *extra_args]
        self.log_path = Path(log_dir) / f"app-{self.port}.log"
        if threads:
            self.cmd += ["--threads", str(threads)]
        self.proc: subprocess.Popen | None = None
        self.ready_s: float | None = None

    def __enter__(self) -> "AppProcess":
        env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1",
               "PYTHONUNBUFFERED": "1", "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
        log = open(self.log_path, "wb")
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(self.cmd, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)
        log.close()
        try:
            self._wait_ready(t0)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, t0: float) -> None:
        deadline = t0 + READY_TIMEOUT_S
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the app exited with code {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url, timeout=2) as response:
                    if response.status == 200:
                        self.ready_s = time.perf_counter() - t0
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"the app did not answer within {READY_TIMEOUT_S} s:\n{self.log_tail()}")

    def log_tail(self, n: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def memory_mb(self) -> dict[str, float]:
        return proc_memory_mb(self.proc.pid)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)   # its own group: only what we started
            self.proc.wait(timeout=15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=15)

    def __exit__(self, *exc) -> None:
        self.stop()


def is_refusal(name: str, message: str) -> bool:
    return name in GRADIO_REFUSALS or any(m in message for m in GRADIO_REFUSAL_MESSAGES)


def unhandled_in_log(text: str) -> list[str]:
    """The final exception of each traceback a server printed (Gradio prints one for every failed event) that is
    not a clean refusal: our handlers' UnexpectedError, or anything Gradio itself did not expect."""
    found = []
    for chunk in text.split("Traceback (most recent call last):")[1:]:
        lines = [line for line in chunk.splitlines() if line.strip()]
        tail = [line for line in lines if not line.startswith((" ", "\t"))]
        if not tail or any(s in chunk for s in ("The above exception was", "During handling of the above")):
            continue
        name = tail[0].split(":")[0].rsplit(".", 1)[-1]
        if not is_refusal(name, chunk):
            found.append(tail[0][:300])
    return found
