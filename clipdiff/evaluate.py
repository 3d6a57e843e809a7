"""How good is the CLIP, and how good are the images the diffusion model makes from it: the figures and their maths.

The CLIP (eval-clip), on held-out images:
  recall@k        caption -> image retrieval: is the query caption's own image among the k most similar?
  zero-shot top-k is an image's species among the k species texts most similar to it?

Generations (eval-gen), per guidance weight w, all in the CLIP's image-embedding space:
  CLIP score      100 * max(cosine(image, prompt), 0), averaged (similarity.clip_score)
  FD_CLIP         the Frechet distance between Gaussians fitted to generated and real embeddings. FID proper
                  uses Inception-v3 pool features, whose weights cannot be downloaded here, so this is FID's
                  formula on the project's CLIP features: its numbers are not comparable with published FIDs.
  CMMD            squared maximum mean discrepancy with a Gaussian RBF kernel, sigma = 10, between unit-norm
                  CLIP embeddings, x1000 (Jayasumana et al. 2024, "Rethinking FID"; their reference code's
                  minimum-variance estimator). No Gaussian assumption, so it holds up on small samples.
  KID             kernel inception distance's estimator (cubic polynomial kernel, unbiased MMD^2, Binkowski et
                  al. 2018) between unit-norm CLIP embeddings, x1000: unbiased, so it centres on 0 for samples of
                  one distribution however small they are (the yardstick uses the same on its own features).
  diversity       mean pairwise cosine distance between the images of one prompt, averaged over prompts.

A negative prompt (negative_effect): the same seeds with the learned null and with the negative prompt in the
unconditional half; how close each image is to the negative prompt (cosine and CLIP score), and on how many seeds
the negative moved it away.

Both distances see unit-normalised embeddings: CLIP compares directions, and raw norms differ between models.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import torch

from . import data as data_mod
from .checkpoints import describe_path
from .data import species_captions
from .sampling import from_uint8, to_uint8
from .pipeline import DEFAULT_SAMPLER, DEFAULT_STEPS, Job, images_per_prompt
from .similarity import clip_score, cosine_matrix, unit

CMMD_SIGMA = 10.0    # the paper's kernel bandwidth, for unit-norm CLIP embeddings
CMMD_SCALE = 1000.0  # the paper reports MMD^2 x 1000
KID_SCALE = 1000.0   # KID is reported x 1000 too
MAX_REAL = 5000      # real embeddings kept (a seeded sample) for FD and CMMD: keeps the kernel sums to seconds
FID_NOTE = ("Frechet distance and CMMD are computed on this project's CLIP image embeddings: FID's Inception-v3 "
            "weights cannot be downloaded here, so FD_CLIP is not comparable with published FID numbers.")


# -- retrieval and zero-shot ---------------------------------------------------------------------------------
def ranks_of_targets(similarity: torch.Tensor, targets) -> torch.Tensor:
    """0-based rank of each row's target column: how many candidates score strictly higher."""
    similarity = torch.as_tensor(similarity).double()
    targets = torch.as_tensor(np.asarray(targets), dtype=torch.long)
    own = similarity.gather(1, targets.view(-1, 1))
    return (similarity > own).sum(1)


def recall_at_k(query_emb, gallery_emb, targets, ks=(1, 5, 10)) -> dict[int, float]:
    """Fraction of queries whose target gallery row (targets[i]) is among their k nearest by cosine."""
    ranks = ranks_of_targets(cosine_matrix(query_emb, gallery_emb), targets)
    return {k: float((ranks < k).double().mean()) for k in ks}


def zero_shot_accuracy(image_emb, class_emb, labels, ks=(1, 5)) -> dict[int, float]:
    """Top-k accuracy of classifying each image by its most similar class text (labels index class_emb rows)."""
    return recall_at_k(image_emb, class_emb, labels, ks)


def class_text_embeddings(encode_text, class_names: list[str]) -> torch.Tensor:
    """(C, D) unit vectors: per class, the mean of its unit-normalised species-caption embeddings (CLIP's
    prompt ensembling). encode_text: list[str] -> (N, D)."""
    per_class = [unit(encode_text(species_captions(name))).mean(0) for name in class_names]
    return unit(torch.stack(per_class))


# -- distributions -----------------------------------------------------------------------------------------
def gaussian_stats(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (float64) of (N, D) features."""
    x = torch.as_tensor(features).double().numpy()
    return x.mean(0), np.cov(x, rowvar=False)


def frechet_distance_from_stats(mu1, cov1, mu2, cov2) -> float:
    """|mu1 - mu2|^2 + tr(C1 + C2 - 2 (C1 C2)^1/2).

    tr((C1 C2)^1/2) is taken as the sum of square roots of the eigenvalues of C1^1/2 C2 C1^1/2, a symmetric
    PSD matrix with the same spectrum: exact for the singular covariances of fewer samples than dimensions,
    where sqrtm of the non-symmetric product goes complex.
    """
    vals, vecs = scipy.linalg.eigh(cov1)
    root1 = (vecs * np.sqrt(np.clip(vals, 0, None))) @ vecs.T
    middle = root1 @ cov2 @ root1
    tr_covmean = np.sqrt(np.clip(scipy.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum()
    diff = np.asarray(mu1) - np.asarray(mu2)
    return float(max(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2 * tr_covmean, 0.0))


def frechet_distance(x, y) -> float:
    """Frechet distance between Gaussians fitted to two sets of (N, D) features."""
    return frechet_distance_from_stats(*gaussian_stats(x), *gaussian_stats(y))


def rbf_mean(x, y, sigma: float = CMMD_SIGMA, chunk: int = 2048) -> float:
    """Mean of exp(-|x_i - y_j|^2 / (2 sigma^2)) over all pairs, in row chunks so memory stays bounded."""
    x = torch.as_tensor(x).double()
    y = torch.as_tensor(y).double()
    total = 0.0
    for s in range(0, len(x), chunk):
        total += torch.exp(-torch.cdist(x[s:s + chunk], y).pow(2) / (2 * sigma ** 2)).sum().item()
    return total / (len(x) * len(y))


def cmmd(x, y, sigma: float = CMMD_SIGMA, scale: float = CMMD_SCALE) -> float:
    """scale * MMD^2 (the biased, minimum-variance estimator) of two (N, D) sets; give unit-norm CLIP embeddings."""
    return scale * (rbf_mean(x, x, sigma) + rbf_mean(y, y, sigma) - 2 * rbf_mean(x, y, sigma))


def cubic_kernel_sum(x, y, chunk: int = 2048) -> float:
    """Sum of (x_i . y_j / d + 1)^3 over all pairs (KID's kernel), in row chunks so memory stays bounded."""
    x, y = torch.as_tensor(x).double(), torch.as_tensor(y).double()
    d = x.shape[1]
    return sum(float(((x[s:s + chunk] @ y.T / d + 1) ** 3).sum()) for s in range(0, len(x), chunk))


def kid_same_term(x) -> float:
    """The mean kernel over distinct pairs of one set (the diagonal left out: what makes KID unbiased)."""
    x = torch.as_tensor(x).double()
    n, d = len(x), x.shape[1]
    diagonal = float(((x * x).sum(1) / d + 1).pow(3).sum())
    return (cubic_kernel_sum(x, x) - diagonal) / (n * (n - 1))


def kid(x, y, y_term: float | None = None) -> float:
    """Unbiased MMD^2 with the kernel (x.y / d + 1)^3 (KID, Binkowski et al. 2018) of (n, d) and (m, d) features,
    unscaled; NaN below two samples a side. y_term: kid_same_term(y), when y's side is reused."""
    x, y = torch.as_tensor(x).double(), torch.as_tensor(y).double()
    if len(x) < 2 or len(y) < 2:
        return float("nan")
    y_term = kid_same_term(y) if y_term is None else y_term
    return kid_same_term(x) + y_term - 2 * cubic_kernel_sum(x, y) / (len(x) * len(y))


def diversity(emb, groups) -> float:
    """Mean pairwise cosine distance (1 - cosine) within each group of rows, averaged over groups of >= 2 rows."""
    emb = torch.as_tensor(emb)
    groups = np.asarray(groups)
    figures = []
    for g in dict.fromkeys(groups.tolist()):
        rows = emb[torch.as_tensor(groups == g)]
        n = len(rows)
        if n >= 2:
            cos = cosine_matrix(rows, rows).double()
            figures.append(float((n * n - cos.sum()) / (n * (n - 1))))  # off-diagonal mean of 1 - cos
    return float(np.mean(figures)) if figures else float("nan")


@dataclass
class RealReference:
    """The real side of FD, CMMD and KID, computed once and reused for every w (and every model)."""
    features: torch.Tensor   # (M, D) unit-norm, float64
    mu: np.ndarray
    cov: np.ndarray
    k_yy: float              # the real-real kernel mean of CMMD
    kid_yy: float            # the real-real term of KID
    source: str
    total: int               # real embeddings before sampling

    @classmethod
    def of(cls, real_emb, source: str = "", max_real: int = MAX_REAL, seed: int = 0) -> "RealReference":
        real_emb = torch.as_tensor(np.asarray(real_emb, dtype=np.float32))
        total = len(real_emb)
        if total > max_real:
            keep = np.sort(np.random.default_rng(seed).choice(total, size=max_real, replace=False))
            real_emb = real_emb[torch.as_tensor(keep)]
        features = unit(real_emb).double()
        mu, cov = gaussian_stats(features)
        return cls(features, mu, cov, rbf_mean(features, features), kid_same_term(features), source, total)

    def frechet_distance(self, features) -> float:
        return frechet_distance_from_stats(*gaussian_stats(features), self.mu, self.cov)

    def cmmd(self, features) -> float:
        x = torch.as_tensor(features).double()
        return CMMD_SCALE * (rbf_mean(x, x) + self.k_yy - 2 * rbf_mean(x, self.features))

    def kid(self, features) -> float:
        return KID_SCALE * kid(features, self.features, self.kid_yy)


# -- the guidance curve --------------------------------------------------------------------------------------
def generation_figures(image_emb, text_emb, prompt_ids, real: RealReference | None = None) -> dict:
    """The figures of one set of generated images: image_emb (N, D), text_emb (N, D) of each image's prompt,
    prompt_ids (N,) which prompt each image belongs to. Distances are None without real embeddings."""
    scores = clip_score(image_emb, text_emb).double()
    features = unit(image_emb).double()
    out = {"clip_score": float(scores.mean()), "clip_score_std": float(scores.std()) if len(scores) > 1 else 0.0,
           "diversity": diversity(features, prompt_ids),
           "frechet_distance": None, "cmmd": None, "kid": None, "n_images": len(features)}
    if real is not None:
        out["frechet_distance"] = real.frechet_distance(features)
        out["cmmd"] = real.cmmd(features)
        out["kid"] = real.kid(features)
    return out


def guidance_curve(pipeline, prompts: list[str], ws: list[float], n: int, seed: int = 0,
                   steps: int = DEFAULT_STEPS, sampler: str = DEFAULT_SAMPLER, real_emb=None,
                   real: RealReference | None = None, on_w=None) -> list[dict]:
    """Generate n images per prompt at every w (image k of each prompt from seed + k, so only w changes
    between rows) and measure them; one dict per w, in the order of ws.

    real_emb: raw CLIP image embeddings (M, D) of real images for FD, CMMD and KID (or a prepared `real`).
    on_w(w, result_dict, images): optional callback after each w, e.g. to show progress or the images.
    """
    if real is None and real_emb is not None:
        real = RealReference.of(real_emb)
    if real is not None and real.features.shape[1] != pipeline.encoder.embed_dim:
        raise ValueError(f"the real embeddings are {real.features.shape[1]}-d, but {pipeline.encoder.identity} "
                         f"gives {pipeline.encoder.embed_dim}-d: they come from another CLIP")
    prompt_emb = pipeline.encoder.encode_text(list(prompts))
    results = []
    for w in ws:
        start = time.perf_counter()
        jobs = images_per_prompt(list(prompts), float(w), seed, n)  # all prompts x n in one batch
        images = pipeline.generate(jobs, steps=steps, sampler=sampler).images
        image_emb = pipeline.encoder.encode_image(images)
        prompt_ids = np.repeat(np.arange(len(prompts)), n)
        figures = generation_figures(image_emb, prompt_emb[prompt_ids], prompt_ids, real)
        per_prompt = []
        for p, prompt in enumerate(prompts):
            rows = torch.as_tensor(prompt_ids == p)
            per_prompt.append({"prompt": prompt,
                               "clip_score": float(clip_score(image_emb[rows], prompt_emb[p].expand(n, -1)).mean()),
                               "diversity": diversity(image_emb[rows], np.zeros(n))})
        result = {"w": float(w), **figures, "per_prompt": per_prompt,
                  "seconds": round(time.perf_counter() - start, 3)}
        results.append(result)
        if on_w is not None:
            on_w(w, result, images)
    return results


def w_response(pipeline, prompts: list[str], n: int, seed: int = 0, steps: int = DEFAULT_STEPS,
               sampler: str = DEFAULT_SAMPLER, w_from: float = 0.0, w_to: float = 4.0) -> float:
    """How much w changes the pictures: the mean |difference| in uint8 levels between each image at w_from and the
    same prompt and seed at w_to (n seeds per prompt, image k from seed + k). A fast-mode student that has not
    learnt w draws nearly the same picture at every w."""
    pictures = [to_uint8(pipeline.generate(images_per_prompt(list(prompts), float(w), seed, n), steps=steps,
                                           sampler=sampler).images).astype(np.int16) for w in (w_from, w_to)]
    return float(np.abs(pictures[1] - pictures[0]).mean())


def negative_effect(pipeline, prompt: str, negative: str, seeds: list[int], w: float = 2.0,
                    steps: int = DEFAULT_STEPS, sampler: str = DEFAULT_SAMPLER) -> dict:
    """One batch: every seed with the null and with the negative prompt, measured by negative_effect_of."""
    jobs = [Job(prompt, w, s) for s in seeds] + [Job(prompt, w, s, negative=negative) for s in seeds]
    image_emb = pipeline.encoder.encode_image(pipeline.generate(jobs, steps=steps, sampler=sampler).images)
    return negative_effect_of(image_emb, pipeline.encoder.encode_text([negative, prompt]), prompt, negative, w)


def negative_effect_of(image_emb, text_emb, prompt: str, negative: str, w: float) -> dict:
    """image_emb: the images of n seeds made with the null, then of the same seeds with the negative; text_emb: the
    negative's and the prompt's. Cosines and CLIP scores of the images to the negative prompt (and to the prompt)
    either way; `lower_on`: the share of seeds whose image moved away from the negative."""
    seeds = len(image_emb) // 2
    to_negative = cosine_matrix(image_emb, text_emb[:1])[:, 0]
    to_prompt = cosine_matrix(image_emb, text_emb[1:])[:, 0]
    null, away = to_negative[:seeds], to_negative[seeds:]

    def either(values: torch.Tensor, scale: float = 1.0, clamp: bool = False) -> dict:
        v = (values.clamp_min(0) if clamp else values) * scale
        return {"null": round(float(v[:seeds].mean()), 4), "negative": round(float(v[seeds:].mean()), 4)}

    return {"prompt": prompt, "negative": negative, "w": w, "seeds": seeds,
            "cosine_to_negative": either(to_negative), "clip_score_to_negative": either(to_negative, 100, True),
            "clip_score_to_prompt": either(to_prompt, 100, True),
            "lower_on": round(float((away < null).float().mean()), 3)}


def best_w(results: list[dict], key: str = "cmmd") -> float | None:
    """The w with the lowest distance (key), or None when the curve has no distances."""
    scored = [r for r in results if r.get(key) is not None]
    return min(scored, key=lambda r: r[key])["w"] if scored else None


# -- the CLIP on held-out images -----------------------------------------------------------------------------
def evaluate_clip(encoder, ds, heldout_idx, ks=(1, 5, 10), zero_shot_ks=(1, 5)) -> dict:
    """Caption -> image recall@k (each held-out image's first caption queries the held-out images) and
    zero-shot species top-k (candidates: every species of the captioned part, i.e. not from flowers5)."""
    held = np.asarray(heldout_idx, dtype=np.int64)
    pixels = from_uint8(ds.images[held])
    image_emb = encoder.encode_image(pixels)
    queries = [ds.captions_for(int(i))[0] for i in held]  # a human caption; species caption if it has none
    text_emb = encoder.encode_text(queries)
    recall = recall_at_k(text_emb, image_emb, np.arange(len(held)), ks)

    splits = ds.splits or ["train"] * len(ds)
    candidates = sorted({int(ds.labels[i]) for i, s in enumerate(splits) if s != "flowers5"})
    position = {label: p for p, label in enumerate(candidates)}
    missing = {ds.class_names[ds.labels[i]] for i in held if int(ds.labels[i]) not in position}
    if missing:
        raise ValueError(f"held-out species missing from the candidates: {sorted(missing)}")
    class_emb = class_text_embeddings(encoder.encode_text, [ds.class_names[c] for c in candidates])
    zero_shot = zero_shot_accuracy(image_emb, class_emb, [position[int(ds.labels[i])] for i in held], zero_shot_ks)
    return {
        "caption_to_image": {f"R@{k}": v for k, v in recall.items()},
        "zero_shot": {f"top{k}": v for k, v in zero_shot.items()},
        "counts": {"heldout_images": len(held), "queries": len(queries), "gallery": len(held),
                   "queries_with_human_caption": int(sum(bool(ds.captions[i]) for i in held)),
                   "candidate_species": len(candidates),
                   "heldout_species": len({int(ds.labels[i]) for i in held})},
    }


def clip_report(encoder, data: str | None = None, n_heldout: int = 1000, seed: int = 0,
                image_size: int = 64) -> dict:
    """eval-clip's report: the figures of evaluate_clip on the images train-clip held out, and what they were."""
    ds = data_mod.load_training_data(data, image_size)
    _, held = data_mod.heldout_split(ds.splits, n_heldout, seed)
    n_test = sum(s == "test" for s in ds.splits)
    pool = f"the official 'test' split ({n_test} images)" if n_test else f"all {len(ds)} images (no 'test' split)"
    split = (f"{len(held)} images drawn with seed {seed} from {pool}, as train-clip holds them out "
             f"(clipdiff.data.heldout_split); every other image trained the CLIP")
    return {"command": "eval-clip", "clip": encoder.identity, "data": describe_path(data or data_mod.default_data_root()),
            "split": split, **evaluate_clip(encoder, ds, held)}
