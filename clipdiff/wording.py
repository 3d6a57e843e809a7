"""Which words of a prompt matter: drop each word in turn, re-encode, and see what changed.

CLIP pools a prompt into one vector, so no attention map says which word did what. Ablation answers it from the
outside, twice over:
- in text space: the cosine between the full prompt's embedding and the embedding without the word (1: the word
  changed nothing CLIP keeps; lower: the word moved the vector);
- in pictures: the image without the word, from the same seed as the full prompt's, and its CLIP score against the
  full prompt (lower than the full prompt's own image: the picture lost what the word asked for).

All the images are one batched sampling run: the full prompt first, then one job per dropped word.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .pipeline import ClipDiffusionPipeline, Job, PreparedRun
from .sampling import DEFAULT_SAMPLER, DEFAULT_STEPS, from_uint8, run_to_end, to_uint8
from .similarity import clip_score, cosine_matrix


def split_words(prompt: str) -> list[str]:
    """The words as the ablation drops them: whitespace-separated, punctuation kept with its word."""
    return prompt.split()


def without_each_word(words: list[str]) -> list[str]:
    """The prompt with word k dropped, for every k."""
    return [" ".join(words[:k] + words[k + 1:]) for k in range(len(words))]


def ablation_jobs(prompt: str, w: float, seed: int, max_words: int | None = None,
                  negative: str = "") -> tuple[list[str], list[Job]]:
    """The words tried (the first max_words) and the run's jobs: the full prompt, then the prompt without each word,
    all from one seed."""
    words = split_words(prompt)
    tried = words[:max_words] if max_words else words
    ablated = without_each_word(words)[:len(tried)]
    jobs = [Job(" ".join(words), w, seed, negative=negative)] + [Job(text, w, seed, negative=negative)
                                                                 for text in ablated]
    return tried, jobs


@dataclass
class WordImportance:
    prompt: str
    words: list[str]
    text_cosine: list[float]       # cosine(full prompt, prompt without word k), CLIP text space
    clip_score: list[float]        # CLIP score of the image without word k against the full prompt
    full_clip_score: float         # ... and of the full prompt's own image
    images: np.ndarray             # (1 + words, H, W, 3) uint8: the full prompt's image, then one per dropped word

    @property
    def text_effect(self) -> list[float]:
        """1 - cosine: how far dropping each word moves the prompt's embedding (0: not at all)."""
        return [1 - c for c in self.text_cosine]

    @property
    def score_drop(self) -> list[float]:
        """How much CLIP score against the full prompt each image lost by dropping its word (negative: it gained)."""
        return [self.full_clip_score - s for s in self.clip_score]

    def order(self) -> list[int]:
        """The words' indices, the word whose removal moves the text embedding most first."""
        return sorted(range(len(self.words)), key=lambda k: -self.text_effect[k])

    def ranking(self) -> list[str]:
        return [self.words[k] for k in self.order()]

    def to_json(self) -> dict:
        return {"prompt": self.prompt, "words": self.words,
                "text_cosine": [round(c, 4) for c in self.text_cosine],
                "clip_score": [round(s, 2) for s in self.clip_score], "full_clip_score": round(self.full_clip_score, 2)}


def measure(pipe: ClipDiffusionPipeline, words: list[str], run: PreparedRun, images: np.ndarray) -> WordImportance:
    """The figures of a finished ablation run (its jobs as ablation_jobs made them, images as the sampler drew them);
    the texts' embeddings are the ones the run was prepared with."""
    jobs = run.jobs
    texts = [j.prompt for j in jobs]
    text_emb = run.text_embeddings(texts)
    cosines = cosine_matrix(text_emb[:1], text_emb[1:])[0].tolist()
    image_emb = pipe.encoder.encode_image(from_uint8(images))
    scores = clip_score(image_emb, text_emb[:1].expand(len(jobs), -1)).tolist()
    return WordImportance(texts[0], words, cosines, scores[1:], scores[0], images)


def word_importance(pipe: ClipDiffusionPipeline, prompt: str, w: float, seed: int, steps: int = DEFAULT_STEPS,
                    sampler: str = DEFAULT_SAMPLER, max_words: int | None = None) -> WordImportance:
    """Drop each word, re-encode, and sample every ablation in one batched run from one seed."""
    words, jobs = ablation_jobs(prompt, w, seed, max_words)
    if not words:
        raise ValueError("the prompt has no words")
    run = pipe.prepare(jobs, steps, sampler)
    images = to_uint8(run_to_end(pipe.sample(run)).images)
    return measure(pipe, words, run, images)
