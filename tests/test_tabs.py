"""The contract every tab module keeps (clipdiff/app/tabs/__init__.py): build, wire and TAKES, tour_fill and
tour_steps where it takes a tour setting, and for each setting a tab takes, the exact control values tour_fill puts
in. One table for all the tabs, so a new tab's tour settings are checked the same way. No server."""
from __future__ import annotations

import pytest

gr = pytest.importorskip("gradio")

from clipdiff import tour  # noqa: E402
from clipdiff.app.blocks import TABS  # noqa: E402
from clipdiff.app.tabs import debug, embed_map, generate, interpolate, similarity, sweep  # noqa: E402
from clipdiff.sampling import Sampling  # noqa: E402

SETTINGS = Sampling(w=1.0, steps=5, sampler="ddim", seed=4)

# (tab, tour setting, the values it puts in as a function of the built page, whether those are all it puts in)
TOUR_FILLS = [
    (generate, tour.Generate(("a", "b"), Sampling(w=1.5, steps=7, sampler="ddpm", seed=3), images_per_prompt=2),
     lambda p: {p.prompts: "a\nb", p.n_images: 2, p.sampling.w: 1.5, p.sampling.steps: 7, p.sampling.sampler: "ddpm",
                p.sampling.seed: 3, p.negative: ""}, True),
    (sweep, tour.Sweep(("a", "b"), (-1.0, 0.5), Sampling(w=9, steps=4, seed=2)),
     lambda p: {p.prompts: "a\nb", p.ws: "-1, 0.5", p.sampling.seed: 2, p.sampling.steps: 4,
                p.sampling.sampler: "dpmsolver-karras", p.negative: ""}, True),
    (similarity, tour.Similarity(("a", "b"), "images"),
     lambda p: {p.texts: "a\nb", p.files: None, p.generated: True, p.over: "images"}, True),
    (embed_map, tour.Map("pca", ("a",), show_texts=False),
     lambda p: {p.method: "pca", p.prompts: "a", p.files: None, p.generated: False, p.texts: False}, True),
    (interpolate, tour.Interpolate("a", "b", 3, SETTINGS),
     lambda p: {p.a: "a", p.b: "b", p.points: 3, p.sampling.w: 1.0, p.sampling.seed: 4, p.sampling.steps: 5,
                p.sampling.sampler: "ddim", p.negative: ""}, True),
    (interpolate, tour.Mix("a", "b", 0.2, SETTINGS), lambda p: {p.weight: 0.2}, False),
    (interpolate, tour.Vary(2, SETTINGS),
     lambda p: {p.count: 2, p.vary_sampling.w: 1.0, p.vary_sampling.seed: 4, p.vary_sampling.steps: 5,
                p.vary_sampling.sampler: "ddim", p.vary_negative: ""}, True),
    (debug, tour.PromptEdit("a", "b", (0.0, 0.5), Sampling(w=1.0, steps=5, seed=2)),
     lambda p: {p.a: "a", p.fractions: "0, 0.5", p.edit_sampling.steps: 5}, False),
    (debug, tour.Words("a red rose", Sampling(seed=4)),
     lambda p: {p.prompt: "a red rose", p.words_sampling.seed: 4}, False),
]


@pytest.mark.parametrize("tab", TABS, ids=lambda t: t.__name__.rsplit(".", 1)[-1])
def test_every_tab_keeps_the_contract(tab):
    """What the app (blocks.py) calls on every tab module, and the Tour tab on every tab that takes a tour setting
    (tabs/tour.py picks the tab by TAKES, so a tab that takes none is never asked to fill or run one)."""
    needed = ("build", "wire") + (("tour_fill", "tour_steps") if tab.TAKES else ())
    for name in needed:
        assert callable(getattr(tab, name, None)), f"{tab.__name__} has no {name}()"
    assert isinstance(tab.TAKES, tuple)


@pytest.mark.parametrize("tab, setting, expected, complete", TOUR_FILLS,
                         ids=[f"{t.__name__.rsplit('.', 1)[-1]}-{type(s).__name__}" for t, s, _, _ in TOUR_FILLS])
def test_what_the_tour_puts_in(ctx, tab, setting, expected, complete):
    assert isinstance(setting, tab.TAKES)
    with gr.Blocks():
        page = tab.build(ctx)
    values, wanted = tab.tour_fill(page, setting), expected(page)
    assert (values if complete else {k: values.get(k) for k in wanted}) == wanted
