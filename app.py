"""python app.py: the clipdiff app in a browser, at http://127.0.0.1:7860 (local only unless you ask).

    python app.py                                   # the shipped models in checkpoints/
    python app.py --unet DIR --clip DIR --atlas DIR # others
    python app.py --host 0.0.0.0 --port 8080        # reachable from the network: put auth in front (README)
    python app.py --auth-file room.txt              # a login page; room.txt holds user:password lines
    python app.py --threads 1                       # one torch thread: faster when other work shares the cores
    python app.py --runtime openvino --precision bf16   # the U-Net in bf16 (faster, other pictures; bf16 CPUs)
    python app.py --backend ray --replicas 2        # sampler steps on 2 Ray Serve replicas (requirements-serve.txt)
    python app.py --backend ray --ray-address HOST:6379   # ... on a Ray cluster's shared deployment (README)
    python app.py --wall outputs/wall --wall-admin-file key.txt   # the room's wall; key.txt: the instructor's key
    python app.py --fast                            # also the fast mode (checkpoints/fast): sampler "fast", 1-8 steps
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

# Before anything imports gradio or huggingface_hub: no telemetry, no hub access, nothing downloaded.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

from clipdiff.app.limits import MODEL_CONCURRENCY, QUEUE_SIZE  # noqa: E402  (gradio-free: --help stays quick)
from clipdiff.checkpoints import DEFAULT_ATLAS_DIR, DEFAULT_FAST_DIR, DEFAULT_UNET_DIR  # noqa: E402
from clipdiff.devices import resolve_device  # noqa: E402
from clipdiff.runtimes import DEFAULT_RUNTIME, PRECISIONS, RUNTIMES, default_runtime, problems  # noqa: E402
from clipdiff.serving.backend import BACKENDS, make_backend  # noqa: E402
from clipdiff.serving.options import SamplerOptions  # noqa: E402
from clipdiff.wall import MAX_ITEMS, Wall, read_admin_key  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--unet", default=str(DEFAULT_UNET_DIR), help="diffusion checkpoint folder")
    parser.add_argument("--clip", default="default", help="'default', a local open_clip folder, or an architecture")
    parser.add_argument("--clip-pretrained", default=None, help="weights file or cached tag for --clip ARCH")
    parser.add_argument("--atlas", default=str(DEFAULT_ATLAS_DIR), help="embedding atlas folder")
    parser.add_argument("--fast", nargs="?", const=str(DEFAULT_FAST_DIR), default=None, metavar="DIR",
                        help="opt-in, never the teaching default: also offer the fast mode, a student distilled from "
                             f"the U-Net (sampler 'fast', 1-8 steps; DIR default {DEFAULT_FAST_DIR.relative_to(DEFAULT_FAST_DIR.parents[1])}). "
                             "Negative prompts, prompt editing, photo edits and playback still need the teacher's "
                             "samplers; without the weights the app runs without it and says so. With --backend ray "
                             "the replicas get the student too (every front of a shared deployment needs the same)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind; 0.0.0.0 exposes it to the network")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--share", action="store_true", help="open a public Gradio share link (off by default)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument("--auth-file", type=Path, default=None,
                        help="ask for a login: a text file of user:password lines (# comments allowed); keep it out "
                             "of the command line, where other users of the machine can read it")
    parser.add_argument("--concurrency", type=int, default=None,
                        help=f"model runs at once (others wait in the queue; sampling runs at once share U-Net forwards); "
                             f"default {MODEL_CONCURRENCY}, with --backend ray replicas x --max-batch")
    parser.add_argument("--max-queue", type=int, default=None,
                        help=f"waiting requests before 'queue is full'; default {QUEUE_SIZE} (--backend ray: 2 x "
                             f"concurrency, at least {QUEUE_SIZE})")
    serving = parser.add_argument_group("serving a room (README: Serving a room)")
    serving.add_argument("--backend", choices=BACKENDS, default="local",
                         help="where sampler steps run: local (this process) or ray (a Ray Serve deployment, "
                              "batched across users; pip install -r requirements-serve.txt)")
    SamplerOptions.add_flags(serving)      # --replicas, --replica-cpus, --max-batch, --batch-wait-ms
    serving.add_argument("--ray-address", default=None,
                         help="--backend ray: join this Ray cluster (HOST:PORT) and share its deployment instead of "
                              "starting a local Ray on 127.0.0.1")
    parser.add_argument("--wall", type=Path, default=None, metavar="FOLDER",
                        help="turn on the room's wall: attendees publish finished images to it, kept in FOLDER (a "
                             f"restart loses nothing; at most {MAX_ITEMS} images, the oldest go first)")
    parser.add_argument("--wall-admin-file", type=Path, default=None,
                        help="--wall: a text file whose first line is the instructor's key (8+ characters), which "
                             "removes anyone's picture from the wall")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's, one per core). On an idle machine all cores "
                             "are fastest; when other work keeps the cores busy, 1 thread can be several times "
                             "faster than 2 (benchmarks/README.md)")
    parser.add_argument("--runtime", choices=RUNTIMES, default=None,
                        help=f"where the U-Net's forward runs (default: {DEFAULT_RUNTIME} on the CPU, the fastest "
                             "whose pictures match eager PyTorch; torch on a GPU); exported once into .cache/")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32",
                        help="bf16: faster on CPUs with AVX-512 BF16 or AMX, but other pictures (recorded in each "
                             "PNG); with --runtime openvino or torch")
    args = parser.parse_args(argv)
    if args.runtime is None:
        args.runtime = default_runtime(resolve_device(args.device))
    runtime_problems = problems(args.runtime, args.precision, resolve_device(args.device))
    if runtime_problems:
        parser.error("; ".join(runtime_problems))
    if args.ray_address and args.backend != "ray":
        parser.error("--ray-address needs --backend ray")
    args.sampler_options = SamplerOptions.from_args(args)
    if args.backend == "ray" and args.sampler_options.problems():
        parser.error("; ".join(args.sampler_options.problems()))
    if args.concurrency is None:
        args.concurrency = args.replicas * args.max_batch if args.backend == "ray" else MODEL_CONCURRENCY
    if args.max_queue is None:
        args.max_queue = max(QUEUE_SIZE, 2 * args.concurrency) if args.backend == "ray" else QUEUE_SIZE
    if args.concurrency < 1 or args.max_queue < 1:
        parser.error("--concurrency and --max-queue must be at least 1")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be at least 1")
    if not 0 < args.port < 65536:
        parser.error("--port must be between 1 and 65535")
    if args.wall_admin_file is not None and args.wall is None:
        parser.error("--wall-admin-file needs --wall")
    args.wall_admin_key = None
    if args.wall_admin_file is not None:
        try:
            args.wall_admin_key = read_admin_key(args.wall_admin_file)
        except (OSError, ValueError) as e:
            parser.error(f"--wall-admin-file {args.wall_admin_file}: {e}")
    args.auth = None
    if args.auth_file is not None:
        try:
            args.auth = read_auth_file(args.auth_file)
        except (OSError, ValueError) as e:
            parser.error(f"--auth-file {args.auth_file}: {e}")
    return args


def read_auth_file(path: Path) -> list[tuple[str, str]]:
    """user:password per line; blank lines and # comments skipped. The password may contain ':'."""
    logins = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, password = line.partition(":")
        if not sep or not user.strip() or not password:
            raise ValueError(f"line {number} is not user:password")
        logins.append((user.strip(), password))
    if not logins:
        raise ValueError("no user:password line in it")
    return logins


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from clipdiff.app.blocks import build_app, serve
    from clipdiff.app.context import Models

    models = Models.load(args.unet, args.clip, args.clip_pretrained, args.atlas, args.device, runtime=args.runtime,
                         precision=args.precision, fast=args.fast)
    for problem in models.problems:
        print(f"warning: {problem}")
    if args.backend != "local" and models.pipeline is not None:
        try:
            fast_dir = args.fast if models.pipeline.student is not None else None   # loaded: the replicas get it
            models.backend = make_backend(args.backend, models.pipeline, args.unet, args.sampler_options,
                                          args.ray_address, fast_dir=fast_dir)
        except RuntimeError as e:     # no Ray installed, or a deployment that serves other weights (or student)
            sys.exit(f"error: {e}")
        print(f"sampling on {models.backend.describe()}")
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))   # a stop (kill, systemd) leaves Ray through close()
    room_wall = None
    if args.wall is not None:
        try:
            room_wall = Wall(args.wall, admin_key=args.wall_admin_key)
        except OSError as e:
            sys.exit(f"error: --wall {args.wall}: {e}")
        print(f"the room's wall: {len(room_wall)} image(s) in {args.wall}")
    try:
        serve(build_app(models, args.concurrency, room_wall=room_wall), host=args.host, port=args.port, share=args.share,
              concurrency=args.concurrency, max_queue=args.max_queue, auth=args.auth)
    finally:
        models.backend.close()


if __name__ == "__main__":
    main()
