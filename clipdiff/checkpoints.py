"""Reading and writing model files: safetensors weights beside a JSON config, written atomically.

Nothing here unpickles: weights are safetensors, configs are JSON. Every failure is a CheckpointError
whose message names the file and says what is wrong.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CHECKPOINTS_DIR = PROJECT_ROOT / "checkpoints"
DEFAULT_CLIP_DIR = CHECKPOINTS_DIR / "clip"
DEFAULT_UNET_DIR = CHECKPOINTS_DIR / "unet"
DEFAULT_ATLAS_DIR = CHECKPOINTS_DIR / "atlas"
DEFAULT_FAST_DIR = CHECKPOINTS_DIR / "fast"       # the fast mode's student (clipdiff/fast.py), opt-in

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"


class CheckpointError(ValueError):
    """A model file is missing, corrupt or does not fit what it is loaded into."""


def _atomic_write(path: Path, write) -> None:
    """Write through a temporary file in the same folder, then rename: a crash leaves the old file whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def describe_path(path) -> str | None:
    """A path as a model card may record it: relative to the project when inside it, else its last two parts
    (no machine's home folders in shipped files)."""
    if path is None:
        return None
    p = Path(path)
    try:
        return str(p.resolve().relative_to(PROJECT_ROOT))
    except ValueError:
        return str(Path(*p.parts[-2:])) if len(p.parts) >= 2 else str(p)


def atomic_save_json(obj, path: Path) -> None:
    _atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n"))


def atomic_save_safetensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict | None = None,
                            dtype: torch.dtype | None = None) -> None:
    """dtype: store floating-point tensors in this type (fp16 halves a shipped file; read back as fp32)."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    if dtype is not None:
        tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}
    _atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def atomic_torch_save(obj, path: Path) -> None:
    """For training state only (optimizer moments); read back with weights_only=True, never full unpickling."""
    _atomic_write(path, lambda tmp: torch.save(obj, tmp))


def load_training_state(path: Path):
    return torch.load(path, map_location="cpu", weights_only=True)


def read_json(path: Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"missing config file {path}")
    try:
        obj = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(obj, dict):  # every file read here is an object; a list would fail later, obscurely
        raise CheckpointError(f"{path} should hold a JSON object, not {type(obj).__name__}")
    return obj


def read_config(folder: Path, fmt: str, what: str, from_dict):
    """folder's config.json as from_dict builds it, once its "format" says it is `fmt` (a clipdiff `what` config);
    a CheckpointError in words otherwise."""
    path = Path(folder) / CONFIG_NAME
    raw = read_json(path)
    if raw.get("format") != fmt:
        raise CheckpointError(f"{path} is not a clipdiff {what} config (format {raw.get('format')!r})")
    try:
        return from_dict(raw)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: {e}") from None


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"missing weights file {path}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(
            f"{path} is not a readable safetensors file ({e}); it may be truncated, or a pickle "
            "renamed .safetensors, which clipdiff never loads") from None


def load_state_dict_checked(module: torch.nn.Module, state: dict[str, torch.Tensor], where: Path) -> None:
    """Strict load with a message that lists what differs, instead of torch's wall of text."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
             for k in own.keys() & state.keys() if own[k].shape != state[k].shape]
    if missing or unexpected or wrong:
        parts = []
        if wrong:
            parts.append(f"{len(wrong)} shape mismatch(es), e.g. {wrong[0]}")
        if missing:
            parts.append(f"{len(missing)} missing tensor(s), e.g. {missing[0]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected tensor(s), e.g. {unexpected[0]}")
        raise CheckpointError(f"{where} does not fit its config: " + "; ".join(parts))
    module.load_state_dict(state, strict=True)
