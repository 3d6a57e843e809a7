"""What a browser session keeps between events: its last run (images, parameters, recorded steps), in a gr.State
that Gradio drops when the session expires."""
from __future__ import annotations

from dataclasses import dataclass

import gradio as gr
import numpy as np
import torch

from ..encoders import ClipEncoder
from ..images import to_pil
from ..playback import PlaybackRun, playback_cosines


@dataclass
class LastRun:
    """What a session keeps of its last generation: images, their parameters and the recorded steps."""
    frames: np.ndarray                 # (N, H, W, 3) uint8 final images
    labels: list[str]
    params: list[dict]
    scores: list[float]                # CLIP score of each image against its condition
    playback: PlaybackRun
    conditions: torch.Tensor | None = None   # raw CLIP embeddings the samples followed, for the playback cosines

    def playback_with_cosines(self, encoder: ClipEncoder) -> PlaybackRun:
        """The playback, its prompt-vs-x0 cosines computed on first use: a CLIP image pass over every recorded
        x0 (~10 % of a run here), done after the final images are out rather than before."""
        pb = self.playback
        if pb.cosines is None and pb.records and self.conditions is not None:
            playback_cosines(encoder, pb, self.conditions)
        return pb


def release_run(run) -> None:
    """gr.State's delete callback: the session is gone or expired; let its frames go now."""
    if isinstance(run, LastRun):
        run.playback.release()


def last_run_state(ttl_s: float) -> gr.State:
    """The session's last run: dropped ttl_s after it was made (or an hour after the tab closed), frames released."""
    return gr.State(None, time_to_live=ttl_s, delete_callback=release_run)


def has_playback(run) -> bool:
    return isinstance(run, LastRun) and bool(run.playback.records)


def made_by_student(run) -> bool:
    """Whether the last run was the fast mode's (its student records no steps to play back)."""
    from ..schedulers import REGISTRY

    return isinstance(run, LastRun) and any(
        getattr(REGISTRY.get(p.get("sampler")), "student", False) for p in run.params)


def generated_images(run) -> tuple[list[str], list]:
    """The last run's images and their names, for the tabs that can include them: "generated 3: <prompt> (seed 7)",
    so a column or a point says which image it is."""
    if not isinstance(run, LastRun):
        return [], []
    names = []
    for i, p in enumerate(run.params):
        prompt = str(p.get("prompt", ""))
        prompt = prompt if len(prompt) <= 32 else prompt[:29] + "..."
        names.append(f"generated {i + 1}: {prompt} (seed {p.get('seed')})")
    return names, [to_pil(f) for f in run.frames]
