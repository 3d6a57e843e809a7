"""The tour's experiments are data: every setting a tour button puts into the app is one the app accepts as is;
and the Tour tab turns each into the other tabs' own handlers, in order."""
from __future__ import annotations

import pytest

from clipdiff import tour
from clipdiff.app.limits import (EDIT_STRIP, INTERPOLATION_POINTS, MAX_ABLATED_WORDS, MAX_IMAGE_STEPS,
                                 MAX_IMAGES_PER_PROMPT, MAX_PROMPT_EDIT_FRACTIONS, MAX_PROMPTS, MAX_SIMILARITY_TEXTS,
                                 MAX_SWEEP_PROMPTS, MAX_SWEEP_WS, MAX_TEXT_CHARS, SEED_RANGE, W_RANGE)
from clipdiff.atlas import METHODS
from clipdiff.sampling import Sampling

# the app's tab ids besides "tour"
TABS = {"generate", "sweep", "playback", "similarity", "map", "interpolate", "debug", "photo"}
RUNS = tour.runs()


def check_prompts(prompts, limit: int) -> None:
    from clipdiff.app.inputs import clean_line

    assert 1 <= len(prompts) <= limit
    for p in prompts:
        assert p == clean_line(p) and p and len(p) <= MAX_TEXT_CHARS, "a prompt the app would change or refuse"


def check_sampling(s: Sampling, images: int) -> None:
    """w, seed, steps and sampler as the app takes them, within the per-run work budget, and quick."""
    assert s.problems() == []
    assert images * s.steps <= MAX_IMAGE_STEPS, "the app would lower the steps"
    assert images * s.steps <= 250, "a tour run must take seconds, not minutes"


def test_the_tour_covers_the_lesson():
    assert 12 <= len(tour.EXPERIMENTS) <= 24
    ids = [e.id for e in tour.EXPERIMENTS]
    assert len(set(ids)) == len(ids)
    for e in tour.EXPERIMENTS:
        sentences = e.explanation.count(". ") + 1
        assert e.title and 2 <= sentences <= 6 and e.runs, e.id
        assert len({r.label for r in e.runs}) == len(e.runs), "buttons of one experiment need distinct labels"
    kinds = {type(r.then) for _, _, r in RUNS}
    assert {tour.Sweep, tour.Playback, tour.Similarity, tour.Map, tour.Interpolate, tour.Mix, tour.Vary,
            tour.PromptEdit, tour.Words} <= kinds
    assert any(r.generate and r.generate.negative for _, _, r in RUNS), "a negative prompt at work"
    dropout = next(e for e in tour.EXPERIMENTS if e.id == "dropout")
    assert "--null-mode zero-mask" in dropout.explanation and "eval-gen" in dropout.explanation
    assert {-1.0, 0.0} <= set(dropout.runs[0].then.ws)
    assert any(r.then and "umap-centered" == getattr(r.then, "method", None) for _, _, r in RUNS)


@pytest.mark.parametrize("experiment, index, run", RUNS, ids=[f"{e.id}-{i}" for e, i, _ in RUNS])
def test_every_run_is_valid_for_the_app(experiment, index, run):
    assert run.tab in TABS
    g, then = run.generate, run.then
    if g is not None:
        check_prompts(g.prompts, MAX_PROMPTS)
        assert g.negative == g.negative.strip() and len(g.negative) <= MAX_TEXT_CHARS
        assert 1 <= g.images_per_prompt <= MAX_IMAGES_PER_PROMPT
        check_sampling(g.sampling, len(g.prompts) * g.images_per_prompt)
    if isinstance(then, tour.Sweep):
        check_prompts(then.prompts, MAX_SWEEP_PROMPTS)
        assert 1 <= len(then.ws) <= MAX_SWEEP_WS and len(set(then.ws)) == len(then.ws)
        assert all(W_RANGE[0] <= x <= W_RANGE[1] for x in then.ws)
        check_sampling(then.sampling, len(then.prompts) * len(then.ws))
    elif isinstance(then, tour.Similarity):
        check_prompts(then.texts, MAX_SIMILARITY_TEXTS)
        assert then.softmax_over in ("texts", "images")
    elif isinstance(then, tour.Map):
        assert then.method in METHODS
        check_prompts(then.prompts, MAX_PROMPTS)
    elif isinstance(then, tour.Interpolate):
        check_prompts((then.a, then.b), 2)
        assert INTERPOLATION_POINTS[0] <= then.points <= INTERPOLATION_POINTS[1]
        check_sampling(then.sampling, then.points)
    elif isinstance(then, tour.Mix):
        check_prompts((then.a, then.b), 2)
        assert 0 <= then.weight <= 1
        check_sampling(then.sampling, 3)
    elif isinstance(then, tour.Vary):
        assert 1 <= then.count <= MAX_IMAGES_PER_PROMPT
        check_sampling(then.sampling, then.count)
    elif isinstance(then, tour.PromptEdit):
        check_prompts((then.a, then.b), 2)
        assert 1 <= len(then.fractions) <= MAX_PROMPT_EDIT_FRACTIONS and list(then.fractions) == sorted(
            set(then.fractions)) and all(0 <= f <= 1 for f in then.fractions)
        assert "[" not in then.a + then.b
        check_sampling(then.sampling, len(then.fractions))
    elif isinstance(then, tour.Words):
        check_prompts((then.prompt,), 1)
        assert "[" not in then.prompt and 3 <= len(then.prompt.split()) <= MAX_ABLATED_WORDS
        check_sampling(then.sampling, len(then.prompt.split()) + 1)
    elif isinstance(then, tour.ForwardNoise):
        assert 0 <= then.t < 400 and SEED_RANGE[0] <= then.seed <= SEED_RANGE[1]
    elif isinstance(then, tour.EditPhoto):
        check_prompts((then.prompt,), 1)
        assert 0 <= then.at <= 1
        check_sampling(then.sampling, 1 + len(EDIT_STRIP))


def test_the_token_experiment_really_truncates(tiny_pipeline):
    """Shown truncated in the token view; the tiny CLIP shares the shipped one's tokenizer and 77-token context."""
    views = [tiny_pipeline.encoder.tokenize(p) for p in tour.EXPERIMENTS[0].runs[0].generate.prompts]
    assert [v.truncated for v in views] == [False, True]


def test_a_run_that_reads_generated_images_must_generate_first():
    with pytest.raises(ValueError, match="needs a Generate step"):
        tour.Run("x", then=tour.Similarity(("a rose",)))
    with pytest.raises(ValueError):
        tour.Run("nothing")


# -- the Tour tab: a loop over the other tabs -----------------------------------------------------------------------
FOLLOWS = {tour.Sweep: ["run_sweep"], tour.Playback: [], tour.Similarity: ["similarity"], tour.Map: ["embed_map"],
           tour.Interpolate: ["interpolate"], tour.Mix: ["mix_prompts"], tour.Vary: ["first_generated_image", "vary"],
           tour.PromptEdit: ["prompt_edit", "show_playback", "rank_new_run", "record_run"], tour.Words: ["word_importance"],
           tour.ForwardNoise: ["forward_noise"], tour.EditPhoto: ["edit_photo", "show_playback", "rank_new_run",
                                                                 "record_run"], type(None): []}


@pytest.fixture(scope="module")
def tabs(tiny_models):
    """Every tab built, as build_app builds them."""
    gr = pytest.importorskip("gradio")
    from clipdiff.app.blocks import lay_out
    from clipdiff.app.context import Context

    ctx = Context.create(tiny_models)
    with gr.Blocks() as demo:
        shared, pages, _, _ = lay_out(ctx, demo)
    return ctx, shared, pages


@pytest.mark.parametrize("experiment, index, run", RUNS, ids=[f"{e.id}-{i}" for e, i, _ in RUNS])
def test_a_tour_button_runs_the_tabs_own_handlers_generate_first(tabs, experiment, index, run):
    from clipdiff.app.tabs import generate
    from clipdiff.app.tabs.tour import plan

    ctx, shared, pages = tabs
    values, calls = plan(ctx, run, shared, pages)
    after_run = [call.fn.__name__ for call in shared.after_run]
    assert after_run == ["show_playback", "rank_new_run", "record_run"]
    expected = (["generate", *after_run] if run.generate else []) + FOLLOWS[type(run.then)]
    assert [call.fn.__name__ for call in calls] == expected
    if run.generate is not None:
        assert values[pages[generate].prompts] == "\n".join(run.generate.prompts)
        assert calls[0].inputs == pages[generate].inputs, "the Generate button's own inputs"
        assert values[pages[generate].negative] == run.generate.negative, "a tour run never keeps an old negative"
    assert all(call.group["concurrency_id"] == "model" for call in calls
               if call.fn.__name__ not in ("first_generated_image", "rank_new_run", "record_run", "forward_noise"))
