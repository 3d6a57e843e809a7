"""How the Ray Serve deployment runs (`SamplerOptions`), in a module of its own: the backend chooser
(backend.py), the deployment (ray_sampler.py) and app.py's flags all read it, and it imports neither Ray nor torch, so
`app.py --help` stays quick and no two serving modules import each other."""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field, fields


def _option(default, flag: str, help: str, scale: float = 1):
    """A field that is also an app.py flag; the flag's value is the field's times scale (e.g. seconds as ms)."""
    return field(default=default, metadata={"flag": flag, "help": help, "scale": scale})


@dataclass
class SamplerOptions:
    """How the deployment runs. Every field is an app.py flag (add_flags), with these defaults."""
    replicas: int = _option(2, "--replicas", "Sampler replicas to deploy")
    replica_cpus: float = _option(1.0, "--replica-cpus", "Ray CPUs (and torch threads) per replica")
    max_batch_size: int = _option(8, "--max-batch", "requests that may share one U-Net forward")   # each 2 x its images
    batch_wait_s: float = _option(0.01, "--batch-wait-ms",
                                  "how long a step waits for batch mates when its batch is not full", scale=1000)

    def problems(self) -> list[str]:
        found = []
        if self.replicas < 1:
            found.append("replicas must be at least 1")
        if self.replica_cpus <= 0:
            found.append("replica CPUs must be positive")
        if self.max_batch_size < 1:
            found.append("the batch size must be at least 1")
        if not 0 <= self.batch_wait_s <= 1:
            found.append("the batch wait must be 0 to 1 s")
        return found

    @classmethod
    def add_flags(cls, group) -> None:
        """One flag per field, its default the field's (app.py's serving group)."""
        for f in fields(cls):
            scale = f.metadata["scale"]
            default = f.default * scale if scale != 1 else f.default
            group.add_argument(f.metadata["flag"], type=type(default), default=default,
                               help=f"--backend ray: {f.metadata['help']}")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "SamplerOptions":
        """The options the flags of add_flags ask for."""
        values = {}
        for f in fields(cls):
            value = getattr(args, _dest(f.metadata["flag"]))
            values[f.name] = value / f.metadata["scale"] if f.metadata["scale"] != 1 else value
        return cls(**values)


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")
