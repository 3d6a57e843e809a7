"""clipdiff.playback on a real tiny run: the recorded frames, the cosines and guidance means read from them, the
GIF export, and the release of the frames. No server."""
from __future__ import annotations

import numpy as np
from PIL import Image

from clipdiff.playback import export_gif, make_playback

PROMPTS = ["A deep red rose flower", "A round white daisy with a yellow center"]


def test_playback_reads_recorded_frames_and_exports_a_gif(tiny_pipeline, tmp_path):
    from clipdiff.pipeline import images_per_prompt

    jobs = images_per_prompt(PROMPTS, 2.0, 0, 1)
    result = tiny_pipeline.generate(jobs, steps=4, sampler="ddim", record_every=1)
    conditions = tiny_pipeline.prepare(jobs).inputs.cond
    run = make_playback(tiny_pipeline.encoder, PROMPTS, result.records, conditions)
    assert run.cosines.shape == (4, 2) and np.all(np.abs(run.cosines) <= 1 + 1e-5)
    assert run.timesteps == sorted(run.timesteps, reverse=True)
    means = run.guidance_means(1)
    assert list(means) == ["|eps_c - eps_u|", "guidance |w (eps_c - eps_u)|"] and means["guidance |w (eps_c - eps_u)|"].shape == (4,)
    assert np.allclose(means["guidance |w (eps_c - eps_u)|"], 2 * means["|eps_c - eps_u|"], rtol=2e-3), "w = 2: twice the gap"
    first, last = run.frame(0, 0), run.frame(3, 0)
    assert first.size == last.size and first.tobytes() != last.tobytes()
    with Image.open(export_gif(run, 1, tmp_path / "run.gif")) as gif:
        assert gif.n_frames == 4
    run.release()
    assert run.records == [] and run.nbytes == 0

    # the app prepares the same cosines only once the final images are out (LastRun.playback_with_cosines)
    from clipdiff.app.session import LastRun
    from clipdiff.playback import PlaybackRun

    last = LastRun(result.images, PROMPTS, [{}, {}], [0.0, 0.0], PlaybackRun(PROMPTS, list(result.records)),
                   conditions)
    assert last.playback.cosines is None
    again = make_playback(tiny_pipeline.encoder, PROMPTS, result.records, conditions)
    assert np.allclose(last.playback_with_cosines(tiny_pipeline.encoder).cosines, again.cosines, atol=1e-6)
