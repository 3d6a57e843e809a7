"""Where the U-Net's forward runs: eager PyTorch, ONNX Runtime or OpenVINO, in fp32 or (opt-in) bf16.

A runtime is chosen once, at load time, and is a drop-in for the torch module: `eps = model(x, t, cond)` with the
same tensors in and out, and the module's config, null embedding and parameters still there, so the sampler, the
serving tier and every handler stay as they are. ONNX Runtime and OpenVINO both run one ONNX export of the U-Net
(dynamic batch), made with torch's own exporter on first use and kept in a cache folder keyed by the weights' hash
and the exporter's version, so a fresh clone exports once and later starts only load it.

fp32 on every runtime gives the eager model's eps within 1e-5 (tests/test_runtimes.py checks it); bf16 is faster
where the CPU has bf16 instructions (AVX-512 BF16 or AMX) but changes eps by ~0.03 and so the pictures: it is an
opt-in, recorded with the runtime in every PNG's parameters. onnxruntime ships with requirements.txt (the default);
openvino is an extra (requirements-openvino.txt). Both are imported only when chosen.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import tempfile
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .checkpoints import PROJECT_ROOT

RUNTIMES = ("torch", "onnx", "openvino")
PRECISIONS = ("fp32", "bf16")
# The fastest runtime whose pictures match eager (fp32: eps within 1e-5): ONNX Runtime, measured by `bench`'s
# runtime rows (benchmarks/README.md). On a GPU the torch module stays.
DEFAULT_RUNTIME = "onnx"
PACKAGES = {"onnx": ("onnxruntime", "onnxruntime (pip install -r requirements.txt)"),
            "openvino": ("openvino", "openvino (pip install -r requirements-openvino.txt)")}
# Exports live under this folder (git-ignored); CLIPDIFF_CACHE moves it, e.g. where the checkout is read-only.
CACHE_DIR = Path(os.environ.get("CLIPDIFF_CACHE", PROJECT_ROOT / ".cache" / "runtimes"))
ONNX_OPSET = 17
INPUT_NAMES = ("x", "t", "cond")


class RuntimeUnavailable(ValueError):
    """The runtime or precision asked for cannot run here; the message says why and what to do instead."""


@dataclass(frozen=True)
class Runtime:
    """Which runtime and precision a U-Net runs on; `label` is how PNG parameters and captions name it."""
    name: str = "torch"
    precision: str = "fp32"

    @property
    def label(self) -> str:
        return f"{self.name} {self.precision}"

    @property
    def exact(self) -> bool:
        """Whether its pictures are the eager model's (fp32 eps within 1e-5); bf16's are not."""
        return self.precision == "fp32"


def cpu_has_bf16() -> bool:
    """Whether this CPU runs bf16 natively (AVX-512 BF16 or AMX): without them bf16 is emulated and ~30x slower."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(flag in flags.split() for flag in ("avx512_bf16", "amx_bf16"))


def default_runtime(device: torch.device | str = "cpu") -> str:
    """The default for a device: DEFAULT_RUNTIME on the CPU where its package is installed, else the torch module."""
    if torch.device(device).type != "cpu" or importlib.util.find_spec(PACKAGES[DEFAULT_RUNTIME][0]) is None:
        return "torch"
    return DEFAULT_RUNTIME


def problems(runtime: str, precision: str, device: torch.device | str = "cpu") -> list[str]:
    """Why this runtime and precision cannot run here (empty: they can)."""
    found = []
    if runtime not in RUNTIMES:
        found.append(f"the runtime must be one of {', '.join(RUNTIMES)}, not {runtime!r}")
    if precision not in PRECISIONS:
        found.append(f"the precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if found:
        return found
    if runtime != "torch" and torch.device(device).type != "cpu":
        found.append(f"--runtime {runtime} runs on the CPU only; on {device} use --runtime torch")
    if runtime in PACKAGES and importlib.util.find_spec(PACKAGES[runtime][0]) is None:
        found.append(f"--runtime {runtime} needs {PACKAGES[runtime][1]}")
    if precision == "bf16":
        if runtime == "onnx":
            found.append("ONNX Runtime has no bf16 kernels for this U-Net on the CPU: for --precision bf16 use "
                         "--runtime openvino (fastest) or --runtime torch")
        if torch.device(device).type == "cpu" and not cpu_has_bf16():
            found.append("this CPU has no bf16 instructions (AVX-512 BF16 or AMX), where bf16 is emulated and "
                         "much slower than fp32: use --precision fp32")
    return found


class RuntimeUNet(nn.Module):
    """The torch U-Net's forward on another runtime (or in bf16); config, null embedding and parameters stay the
    torch module's, so it drops in wherever the module is used for inference (not for training)."""

    def __init__(self, module: nn.Module, runtime: Runtime, forward):
        super().__init__()
        self.module = module
        self.runtime = runtime
        self._forward = forward

    @property
    def config(self):
        return self.module.config

    @property
    def cond_dim(self) -> int:
        return self.module.cond_dim

    def null_condition(self, batch: int) -> torch.Tensor:
        return self.module.null_condition(batch)

    def num_parameters(self) -> int:
        return self.module.num_parameters()

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """eps for x at timesteps t (B,) given cond (B, D), as the torch module's forward answers."""
        return self._forward(x, t, cond)


def runtime_of(model: nn.Module) -> Runtime:
    """The runtime a (possibly wrapped) U-Net runs on; a bare torch module is eager fp32."""
    return getattr(model, "runtime", Runtime())


def eager_module(model: nn.Module) -> nn.Module:
    """The torch module a (possibly wrapped) U-Net was made from."""
    return model.module if isinstance(model, RuntimeUNet) else model


def with_runtime(model: nn.Module, runtime: str | None = None, precision: str = "fp32",
                 cache_dir: Path | None = None) -> nn.Module:
    """The U-Net on this runtime and precision (None: default_runtime for its device). Eager fp32 is the module
    itself; anything that cannot run here raises RuntimeUnavailable with what to do instead."""
    model = eager_module(model)
    device = next(model.parameters()).device
    runtime = default_runtime(device) if runtime is None else runtime
    found = problems(runtime, precision, device)
    if found:
        raise RuntimeUnavailable("; ".join(found))
    model = model.eval()
    chosen = Runtime(runtime, precision)
    if runtime == "torch":
        if precision == "fp32":
            return model
        return checked_against_eager(RuntimeUNet(model, chosen, _autocast_bf16(model, device)))
    onnx_path = export_onnx(model, cache_dir or CACHE_DIR)
    forward = _onnxruntime(onnx_path) if runtime == "onnx" else _openvino(onnx_path, precision, cache_dir or CACHE_DIR)
    return checked_against_eager(RuntimeUNet(model, chosen, forward))


# How far a runtime's eps may stray from eager fp32 on the probe at load before it is refused: fp32 runs the same
# sums (1e-5 in tests; 1e-3 here leaves room for another CPU's kernels), bf16 strays ~0.03 on the shipped U-Net
# (bench's runtime rows): 0.5 lets any honest bf16 through and stops NaN or noise.
LOAD_TOLERANCE = {"fp32": 1e-3, "bf16": 0.5}


def checked_against_eager(model: "RuntimeUNet") -> "RuntimeUNet":
    """The runtime, once probe batches of 2 and 8 (one image and four, with CFG) give eager's eps within
    LOAD_TOLERANCE: a runtime that answers NaN or nonsense here is refused at load with what to use instead, rather
    than making noise pictures. (OpenVINO bf16 on an AVX-512 BF16 Xeon, 2026-12-06: in 2 of 3 loads every forward at
    batch 2 and 8 answered NaN, none at 32; a load that answered well kept answering well.)"""
    cfg, g = model.config, torch.Generator("cpu").manual_seed(0)
    got, want = [], []
    for batch in (2, 8):
        x = torch.randn(batch, cfg.channels, cfg.image_size, cfg.image_size, generator=g)
        t = torch.linspace(10, 390, batch)
        cond = torch.randn(batch, model.cond_dim, generator=g)   # rows as wide as the model takes (a student's: + w)
        with torch.inference_mode():
            got.append(model(x, t, cond).float().reshape(-1))
            want.append(model.module(x, t, cond).float().reshape(-1))
    got, want = torch.cat(got), torch.cat(want)
    diff = (got - want).abs().max().item()
    label, tolerance = model.runtime.label, LOAD_TOLERANCE[model.runtime.precision]
    if not torch.isfinite(got).all() or not diff <= tolerance:
        what = "non-finite eps (NaN or inf)" if not torch.isfinite(got).all() else f"eps {diff:.3g} away from eager"
        raise RuntimeUnavailable(f"--runtime {model.runtime.name} --precision {model.runtime.precision} gave {what} "
                                 f"on this CPU at load (allowed: {tolerance:g}): use --precision fp32, or "
                                 f"--runtime torch{' --precision bf16' if model.runtime.precision == 'bf16' else ''}")
    return model


def _autocast_bf16(model: nn.Module, device: torch.device):
    def forward(x, t, cond):
        with torch.autocast(device.type, dtype=torch.bfloat16):
            return model(x, t, cond).float()
    return forward


# -- the ONNX export, shared by ONNX Runtime and OpenVINO ---------------------------------------------------------
def weights_key(model: nn.Module) -> str:
    """A hash of what the export depends on: the U-Net's config, its weights, torch's exporter and the opset."""
    h = hashlib.sha256()
    config = model.config.to_dict() if hasattr(model.config, "to_dict") else repr(model.config)
    h.update(json.dumps(config, sort_keys=True, default=str).encode())
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(tensor.shape)).encode())
        h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    h.update(f"torch {torch.__version__} opset {ONNX_OPSET}".encode())
    return h.hexdigest()[:16]


def export_onnx(model: nn.Module, cache_dir: Path) -> Path:
    """The U-Net as an ONNX file with a dynamic batch, from the cache or exported now (written atomically, so
    processes that export at once never read half a file)."""
    cfg = model.config
    name = f"unet-{weights_key(model)}.onnx"
    folders = (Path(cache_dir), Path(tempfile.gettempdir()) / "clipdiff-runtimes")   # the second: a read-only checkout
    for folder in folders:
        path = folder / name
        if path.is_file():
            return path
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
            os.close(fd)
            break
        except OSError:
            if folder == folders[-1]:
                raise
    # t goes in as float32: diffusers turns timesteps to float before anything else, so one graph takes the
    # samplers' integer timesteps and fractional ones alike.
    example = (torch.zeros(2, cfg.channels, cfg.image_size, cfg.image_size), torch.zeros(2),
               torch.zeros(2, model.cond_dim))
    batch = {0: "batch"}
    try:
        # Under no_grad, never inference_mode: torch's exporter can fail there (benchmarks/README.md).
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings(), \
                contextlib.redirect_stdout(None):
            warnings.simplefilter("ignore")          # the tracer's notes on diffusers' shape checks
            torch.onnx.export(model, example, tmp, dynamo=False, opset_version=ONNX_OPSET,
                              input_names=list(INPUT_NAMES), output_names=["eps"],
                              dynamic_axes={name: batch for name in (*INPUT_NAMES, "eps")})
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _inputs(x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> dict:
    t = t.reshape(-1).expand(x.shape[0]) if t.numel() == 1 else t
    return {"x": x.detach().float().contiguous().cpu().numpy(), "t": t.detach().float().contiguous().cpu().numpy(),
            "cond": cond.detach().float().contiguous().cpu().numpy()}


def _onnxruntime(path: Path):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()      # app.py --threads, as the torch module would use
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def forward(x, t, cond):
        return torch.from_numpy(session.run(None, _inputs(x, t, cond))[0])
    return forward


def _openvino(path: Path, precision: str, cache_dir: Path):
    import openvino

    core = openvino.Core()
    # OpenVINO keeps its compiled blobs here, keyed by its own version and the model: later starts skip compiling.
    config = {"CACHE_DIR": str(Path(cache_dir) / "openvino"), "INFERENCE_NUM_THREADS": torch.get_num_threads(),
              "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32"}
    compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
    request = compiled.create_infer_request()
    lock = threading.Lock()            # one infer request answers one call at a time (the app runs several)

    def forward(x, t, cond):
        with lock:
            return torch.from_numpy(request.infer(_inputs(x, t, cond))[0].copy())
    return forward
