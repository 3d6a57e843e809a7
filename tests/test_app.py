"""The app as a client meets it: a launched server over the tiny models, driven through gradio_client. What each
endpoint answers is pinned in test_same_outputs.py and each handler is tested as a function in test_tab_*.py;
here: the streaming, refusals and cancellation that only a server shows, and an app built without checkpoints."""
from __future__ import annotations

import time

import pytest
from PIL import Image

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

from clipdiff.images import read_params  # noqa: E402
from clipdiff.testing import solid_image  # noqa: E402

PROMPTS = ["A deep red rose flower", "A round white daisy with a yellow center"]


def test_generate_streams_previews_then_pngs_and_the_session_keeps_the_run(client):
    job = client.submit("\n".join(PROMPTS), 2.0, 5, "ddim", 7, 2, api_name="/generate")
    updates = list(job)
    assert [u[1] for u in updates[:-1]] == [f"Sampling: step {k} of 5" for k in range(1, 5)]
    width, height = Image.open(updates[0][0][0]["image"]).size
    assert width == 4 * height + 3 * 2, "a preview is one picture: the 4 images side by side, 2 px apart"
    gallery, status, seed_used = job.outputs()[-1]
    assert "Done" in status and seed_used == 7 and len(gallery) == 4
    assert [read_params(item["image"])["seed"] for item in gallery] == [7, 8, 7, 8]

    # the same session plays its run back and ranks it
    with Image.open(client.predict(0, api_name="/playback_gif")) as gif:
        assert gif.n_frames == 5
    assert len(client.predict(api_name="/rank")) == 4
    prompt, w, steps, sampler, seed, _ = client.predict(handle_file(gallery[3]["image"]), api_name="/load_params")
    assert (prompt, w, steps, sampler, seed) == (PROMPTS[1], 2.0, 5, "ddim", 8)


def test_the_served_queue_polls_at_the_apps_rate_not_every_millisecond(live_app):
    from clipdiff.app.limits import QUEUE_POLL_S

    # a Gradio that renames the attribute fails here, not silently back at 1,000 wake-ups a second
    assert live_app.demo._queue.sleep_when_free == QUEUE_POLL_S > 0.001


def test_another_session_has_no_run_to_play_back(live_app):
    fresh = Client(live_app.url, verbose=False)
    try:
        with pytest.raises(AppError, match="No run to play back yet"):
            fresh.predict(0, api_name="/playback_gif")
        with pytest.raises(AppError, match="Generate some images first"):
            fresh.predict(api_name="/rank")
    finally:
        fresh.close()


@pytest.mark.parametrize("args, message", [
    (("", 2.0, 5, "ddim", 1, 1), "Type at least one prompt"),
    (("x" * 10_001, 2.0, 5, "ddim", 1, 1), "the limit is 10,000"),
    ((PROMPTS[0], 2.0, 10**9, "ddim", 1, 1), "greater than maximum"),
    ((PROMPTS[0], -1e9, 5, "ddim", 1, 1), "less than minimum"),
    ((PROMPTS[0], 2.0, 5, "ddim", 1, -3), "less than minimum"),
    ((PROMPTS[0], 2.0, 5, "ddim", "not a number", 1), "Expected a `float"),
    ((PROMPTS[0], 2.0, 5, "no-such-sampler", 1, 1), "no-such-sampler"),
])
def test_bad_values_get_a_clear_error_and_the_app_still_answers(client, args, message):
    with pytest.raises(AppError, match=message):
        client.predict(*args, api_name="/generate")
    gallery, status, _ = client.predict(PROMPTS[0], 2.0, 2, "ddim", 1, 1, api_name="/generate")
    assert "Done" in status


def test_bad_uploads_get_a_clear_error(client, tmp_path):
    text = tmp_path / "not-an-image.png"
    text.write_text("hello")
    with pytest.raises(AppError, match="not a readable image"):
        client.predict("a rose", [handle_file(str(text))], False, "texts", api_name="/similarity")
    with pytest.raises(AppError, match="no clipdiff parameters"):
        client.predict(handle_file(str(solid_image(tmp_path, "plain.png", (1, 2, 3)))), api_name="/load_params")


def test_a_cancelled_generation_stops_between_steps_and_frees_the_worker(client, live_app, tiny_models):
    """With one model worker, the follow-up runs only once the cancelled run has let go, and after that the
    cancelled run makes no U-Net call. The two are told apart by batch size: the long run sends 8 images a step
    (4, conditional and unconditional), the follow-up 2."""
    batches = []
    hook = tiny_models.pipeline.model.register_forward_pre_hook(lambda module, args: batches.append(len(args[0])))
    other = Client(live_app.url, verbose=False)
    try:
        long = client.submit(PROMPTS[0], 2.0, 400, "ddim", 1, 4, api_name="/generate")
        waited = time.monotonic()
        while len(long.outputs()) < 3:          # wait for the long run to be under way
            assert not long.done() and time.monotonic() - waited < 120, "no previews from the long run"
            time.sleep(0.02)
        long.cancel()
        _, status, _ = other.predict(PROMPTS[0], 2.0, 2, "ddim", 1, 1, api_name="/generate")
    finally:
        hook.remove()
        other.close()
    assert "Done" in status
    follow_up = batches.index(2)
    assert 8 not in batches[follow_up:], "the cancelled run went on sampling after the next run began"
    assert batches.count(8) < 400, "the cancelled run sampled to the end"


def test_missing_checkpoints_still_build_an_app_that_says_what_is_missing(tmp_path):
    from clipdiff.app.blocks import build_app
    from clipdiff.app.context import Models

    models = Models.load(tmp_path / "no-unet", str(tmp_path / "no-clip"), None, tmp_path / "no-atlas", "cpu")
    assert models.pipeline is None and models.atlas is None and len(models.problems) == 2
    assert all("python -m clipdiff train-default" in p for p in models.problems)
    assert "Something is missing" in models.status_markdown()
    build_app(models)
