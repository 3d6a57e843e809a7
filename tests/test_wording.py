"""Which words matter (clipdiff.wording): each word dropped once from one seed, and word importance as one batched
run scored by text cosines and CLIP scores. Tiny random models; the shipped model's behaviour is checked, marked slow,
in test_prompt_debugging.py."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from clipdiff.pipeline import Job
from clipdiff.sampling import to_uint8
from clipdiff.wording import ablation_jobs, measure, split_words, without_each_word, word_importance


def to_frames(x: torch.Tensor) -> np.ndarray:
    return to_uint8(x).astype(int)


def test_ablation_drops_each_word_once_from_one_seed():
    assert split_words("  a red,  rose ") == ["a", "red,", "rose"]
    assert without_each_word(["a", "red", "rose"]) == ["red rose", "a rose", "a red"]
    words, jobs = ablation_jobs("a red rose in snow", 1.5, 9, max_words=3)
    assert words == ["a", "red", "rose"]
    assert [j.prompt for j in jobs] == ["a red rose in snow", "red rose in snow", "a rose in snow", "a red in snow"]
    assert {(j.w, j.seed) for j in jobs} == {(1.5, 9)}


def test_word_importance_is_one_batched_run_with_text_cosines_and_clip_scores(tiny_pipeline):
    calls = []
    hook = tiny_pipeline.model.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    try:
        result = word_importance(tiny_pipeline, "a red rose", 2.0, 4, steps=3, sampler="ddim")
    finally:
        hook.remove()
    assert calls == [8, 8, 8], "one run: full prompt + 3 ablations, doubled, every step"
    assert result.words == ["a", "red", "rose"] and result.images.shape == (4, 16, 16, 3)
    emb = tiny_pipeline.encoder.encode_text(["a red rose", "a rose"])
    assert result.text_cosine[1] == pytest.approx(float(torch.cosine_similarity(emb[0], emb[1], dim=0)), abs=1e-5)
    assert all(-1 <= c <= 1 for c in result.text_cosine) and len(result.clip_score) == 3
    alone = tiny_pipeline.generate([Job("a rose", 2.0, 4)], steps=3, sampler="ddim").images
    assert np.abs(result.images[2].astype(int) - to_frames(alone)[0]).max() <= 1, "the same-seed image without 'red'"
    assert sorted(result.ranking()) == sorted(result.words)
    prepared = tiny_pipeline.prepare(ablation_jobs("a red rose", 2.0, 4)[1])
    again = measure(tiny_pipeline, result.words, prepared, result.images)
    assert again.to_json() == result.to_json()
    assert set(result.to_json()) == {"prompt", "words", "text_cosine", "clip_score", "full_clip_score"}
