"""The sampling controls (w, steps, sampler, seed), built one way for every tab from the core's defaults and
bounds, and filled from a Sampling."""
from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from ..sampling import Sampling, default_steps, max_steps
from ..schedulers import REGISTRY, sampler_spec
from .limits import DEFAULT_SAMPLER, DEFAULT_STEPS, DEFAULT_W, MAX_TEXT_CHARS, SAMPLERS, STEPS_RANGE, W_RANGE

def sampler_info(samplers=SAMPLERS) -> str:
    """What the sampler control says about each of its choices (the registry's words)."""
    return "; ".join(f"{REGISTRY[name].name}: {REGISTRY[name].description}" for name in samplers)



def w_slider(label: str = "w", **options) -> gr.Slider:
    return gr.Slider(*W_RANGE, value=DEFAULT_W, step=0.25, label=label, **options)


def steps_slider() -> gr.Slider:
    return gr.Slider(*STEPS_RANGE, value=DEFAULT_STEPS, step=1, label="steps")


def sampler_radio(samplers=SAMPLERS) -> gr.Radio:
    """The teacher's samplers; the fast mode's too where the app loaded its student (app.py --fast)."""
    return gr.Radio(list(samplers), value=DEFAULT_SAMPLER, label="sampler", info=sampler_info(samplers))


def steps_for_sampler(sampler, steps):
    """The steps control after the sampler changes: its own default where the steps are more than it takes (12 ->
    the fast mode's 4) or fewer than it needs (4 -> the teacher's 12); else as it is."""
    if sampler not in REGISTRY or not isinstance(steps, (int, float)):
        return gr.skip()
    if steps > max_steps(sampler) or steps < sampler_spec(sampler).min_steps:
        return default_steps(sampler)
    return gr.skip()


NEGATIVE_INFO = "guidance pushes away from this prompt instead of from the learned null; empty: the null"


def negative_box(**options) -> gr.Textbox:
    """A negative prompt: eps = (1 + w) eps(prompt) - w eps(negative)."""
    return gr.Textbox("", label="negative prompt", info=NEGATIVE_INFO, max_length=MAX_TEXT_CHARS, **options)


def seed_number(label: str = "seed", **options) -> gr.Number:
    return gr.Number(0, precision=0, label=label, **options)


@dataclass
class SamplingControls:
    """One tab's controls of a Sampling; w is None where the tab has none (the sweep's rows are its w values)."""
    w: gr.Slider | None
    seed: gr.Number
    steps: gr.Slider
    sampler: gr.Radio

    @classmethod
    def build(cls, with_w: bool = True, seed_label: str = "seed", samplers=SAMPLERS) -> "SamplingControls":
        """w, seed, steps and sampler, in that order, in the current row or column."""
        w = w_slider() if with_w else None
        return cls(w, seed_number(seed_label), steps_slider(), sampler_radio(samplers))

    def fill(self, s: Sampling) -> dict:
        """What a tour run puts into these controls."""
        values = {self.seed: s.seed, self.steps: s.steps, self.sampler: s.sampler}
        if self.w is not None:
            values[self.w] = s.w
        return values
