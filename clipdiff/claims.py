"""What the tour, the info texts and the docs say about the shipped models, measured on those models.

A teaching tool must not say what its model does not do, and hand-written figures go stale when the models are
retrained. So every figure or promise a text makes about the shipped models is a named entry of one measurement
(`measure`), written with the ids of the models it was measured on to `checkpoints/claims.json`
(`python -m clipdiff claims` re-measures and rewrites it). Texts carry placeholders (`{cosine_right_mean:.2f}`)
that `render` fills from that file; `stale_texts` lists the document lines (README, model card) that no longer
read as their template renders, and the tests fail on any of it, or when the file's model ids are not the
shipped models'.

Every sampled figure is a mean over SEEDS seeds (image k from seed k), at the app's defaults (w = 2, the default
sampler and steps) unless its entry says otherwise, so one unlucky seed cannot make or break a claim.
"""
from __future__ import annotations

import functools
import hashlib
import string
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from . import caveats
from .checkpoints import (CHECKPOINTS_DIR, DEFAULT_ATLAS_DIR, DEFAULT_CLIP_DIR, DEFAULT_FAST_DIR, DEFAULT_UNET_DIR,
                          PROJECT_ROOT, atomic_save_json, read_json)
from .evaluate import negative_effect_of
from .pipeline import REFERENCE_PROMPTS, Job, images_per_prompt, prompt_edits
from .playback import prompt_x0_cosines
from .sampling import DEFAULT_W, to_uint8
from .similarity import clip_score, cosine_matrix, unit
from .wording import split_words, without_each_word

CLAIMS_PATH = CHECKPOINTS_DIR / "claims.json"
GUIDANCE_PATH = PROJECT_ROOT / "assets" / "eval_gen.json"     # eval-gen's report: the README's guidance table
GUIDANCE_ROWS = (("CLIP score", "clip_score", ".1f"), ("FD_CLIP", "frechet_distance", ".2f"),
                 ("CMMD x1000", "cmmd", ".2f"), ("diversity", "diversity", ".2f"))
# The fast mode (opt-in, checkpoints/fast): its figures come from eval-gen's yardstick and bench, beside the
# teacher's in the same run, and the README and the model card quote them as FAST_DOCUMENTS' table (fast_table).
FAST_REPORT_PATH = PROJECT_ROOT / "assets" / "eval_fast.json"     # eval-gen --species 8 --species-w 2 --fast
FAST_BENCH_PATH = PROJECT_ROOT / "benchmarks" / "bench_fast.json"  # bench --fast: generate_4_s and _fast
FAST_DOCUMENTS = ("README.md", "checkpoints/README.md")
SEEDS = 8
WEIGHT_FILES = {"clip": (DEFAULT_CLIP_DIR, "open_clip_model.safetensors"),
                "unet": (DEFAULT_UNET_DIR, "model.safetensors"),
                "atlas": (DEFAULT_ATLAS_DIR, "atlas.safetensors")}

DAISY, SUNFLOWER, ROSE = REFERENCE_PROMPTS
# (key, prompt, negative, the colour the negative names): the README's table, and the tour's two buttons
NEGATIVES = (("rose_red", "A rose", "red", "red"),
             ("sunflower_orange", SUNFLOWER, "orange", "orange"),
             ("daisy_yellow", DAISY, "yellow", "yellow"),
             ("deep_rose_red", ROSE, "red", "red"))
OUT_OF_DISTRIBUTION = ("A purple elephant", "A red sports car on a road")
OOD_READINGS = (("elephant", "A purple flower", "An elephant"), ("car", "A red flower", "A car"))   # per OOD prompt
PLAYBACK_PROMPT, PLAYBACK_STEPS = SUNFLOWER, 20
SWITCH_FRACTIONS = (0.2, 0.3, 0.75)
WORDS_PROMPT = "a red rose"
WORDY_CAPTION = ("this flower has petals that are yellow and white with a large orange center and long green leaves "
                 "around it")                  # the tour's word-importance caption: 'this flower has' opens it,
COLOUR_WORDS = {"yellow", "white", "orange"}   # of the flower; its tail is 'and long green leaves around it'
# Hue bands (PIL's HSV, hue in [0, 1)) of the colours a negative prompt names; a pixel counts when it is
# saturated and bright enough to show a colour at all.
HUES = {"red": ((0.0, 0.05), (0.9, 1.0)), "orange": ((0.05, 0.11),), "yellow": ((0.11, 0.19),),
        "pink": ((0.8, 0.9),)}
MIN_SATURATION, MIN_VALUE = 0.35, 0.25


# -- which models ----------------------------------------------------------------------------------------------
def weights_id(folder: Path, weights_name: str) -> str:
    """Folder name plus the first hex digits of the weights' hash (pipeline.model_id_of's form, any file name)."""
    digest = hashlib.sha256((Path(folder) / weights_name).read_bytes()).hexdigest()[:10]
    return f"{Path(folder).name}-{digest}"


def shipped_model_ids() -> dict[str, str]:
    """The ids of the models in checkpoints/: what the app loads by default."""
    return {name: weights_id(folder, weights) for name, (folder, weights) in WEIGHT_FILES.items()}


# -- the measurements ------------------------------------------------------------------------------------------
def colour_share(images_uint8: np.ndarray, colour: str) -> float:
    """Mean share of pixels whose hue falls in the colour's band (saturated, not dark), over (N, H, W, 3) images."""
    shares = []
    for frame in images_uint8:
        hsv = np.asarray(Image.fromarray(frame).convert("HSV"), dtype=np.float32) / 255
        hue, shows_colour = hsv[..., 0], (hsv[..., 1] > MIN_SATURATION) & (hsv[..., 2] > MIN_VALUE)
        in_band = np.zeros_like(shows_colour)
        for low, high in HUES[colour]:
            in_band |= (hue >= low) & (hue < high)
        shares.append(float((in_band & shows_colour).mean()))
    return float(np.mean(shares))


def photo_likeness(image_emb: torch.Tensor, photo_emb: torch.Tensor) -> torch.Tensor:
    """Per image: the cosine to its nearest real photo (CLIP image space). Generated flowers sit near photos;
    grey noise and mush sit far from all of them, so this says 'still a flower' where a prompt score cannot."""
    return cosine_matrix(image_emb, photo_emb).max(1).values


def atlas_cosines(atlas) -> dict:
    """Cosines of every atlas photo to the species prompts: its own species' (right) and the others' (wrong)."""
    species = atlas.text_labels >= 0
    cosines = cosine_matrix(torch.as_tensor(atlas.image_emb), torch.as_tensor(atlas.text_emb[species])).numpy()
    own = atlas.labels[:, None] == atlas.text_labels[species][None, :]
    right, wrong = cosines[own], cosines[~own]
    return {"cosine_right_mean": float(right.mean()), "cosine_wrong_mean": float(wrong.mean()),
            "cosine_right_p10": float(np.percentile(right, 10)), "cosine_right_p90": float(np.percentile(right, 90)),
            "cosine_wrong_p10": float(np.percentile(wrong, 10)), "cosine_wrong_p90": float(np.percentile(wrong, 90))}


def word_effects(encoder, prompt: str) -> list[tuple[str, float]]:
    """Per word of the prompt, in order (wording.py's ablation, text side only): 1 - cosine between the prompt's
    embedding and the embedding of the prompt without that word."""
    words = split_words(prompt)
    emb = encoder.encode_text([" ".join(words)] + without_each_word(words))
    return list(zip(words, (1 - cosine_matrix(emb[:1], emb[1:])[0]).tolist()))


def static_figures(encoder, atlas, diffusion_config) -> dict[str, float]:
    """The figures that need no sampling: the atlas's size, the U-Net's context dropout, word effects."""
    f = {"atlas_photos": len(atlas.image_emb), "atlas_texts": len(atlas.texts),
         "context_dropout": float(diffusion_config.unet.cond_drop_prob)}
    f.update({f"drop_{word}": effect for word, effect in word_effects(encoder, WORDS_PROMPT)})
    wordy = word_effects(encoder, WORDY_CAPTION)
    colours = [e for word, e in wordy if word in COLOUR_WORDS]
    f.update(wordy_colour_min=min(colours), wordy_colour_max=max(colours),
             wordy_other_max=max(e for word, e in wordy if word not in COLOUR_WORDS),
             wordy_opening_max=max(e for _, e in wordy[:3]),            # 'this flower has'
             wordy_tail_max=max(e for _, e in wordy[-6:]))              # 'and long green leaves around it'
    return f


def measure(pipe, atlas, clip_eval: dict, seeds: int = SEEDS, playback_steps: int = PLAYBACK_STEPS) -> dict:
    """Every claim's figure, measured on these models: {"figures": {name: number}, ...what they were measured on}."""
    seed_list = list(range(seeds))
    encoder = pipe.encoder
    photos = unit(torch.as_tensor(atlas.image_emb))
    f = {"seeds": seeds, "zero_shot_top1": float(clip_eval["zero_shot"]["top1"]), **atlas_cosines(atlas)}

    # The tour's cosine and out-of-distribution runs: the reference prompts, the odd prompts, and noise.
    prompts = list(REFERENCE_PROMPTS) + list(OUT_OF_DISTRIBUTION)
    images = pipe.generate(images_per_prompt(prompts, DEFAULT_W, 0, seeds)).images
    image_emb = encoder.encode_image(images)
    text_emb = encoder.encode_text(prompts)
    by_prompt = image_emb.reshape(len(prompts), seeds, -1)
    reference = cosine_matrix(text_emb[:3], image_emb[:3 * seeds]).numpy()        # (3 texts, 3 x seeds images)
    own = np.repeat(np.eye(3, dtype=bool), seeds, axis=1)
    f.update(generated_right_min=float(reference[own].min()), generated_right_max=float(reference[own].max()),
             generated_wrong_min=float(reference[~own].min()), generated_wrong_max=float(reference[~own].max()))
    scores = {p: float(clip_score(by_prompt[k], text_emb[k].expand(seeds, -1)).mean()) for k, p in enumerate(prompts)}
    # the app's own baseline, shown beside every score: pure noise against the same prompt
    noise_scores = dict(zip(prompts, caveats.noise_scores(encoder, text_emb, pipe.image_size).tolist()))
    f.update(ood_elephant_score=scores[OUT_OF_DISTRIBUTION[0]], ood_car_score=scores[OUT_OF_DISTRIBUTION[1]],
             ood_elephant_noise_score=noise_scores[OUT_OF_DISTRIBUTION[0]],
             ood_car_noise_score=noise_scores[OUT_OF_DISTRIBUTION[1]],
             rose_score=scores[ROSE], rose_noise_score=noise_scores[ROSE],
             reference_score_min=min(scores[p] for p in REFERENCE_PROMPTS),
             reference_score_max=max(scores[p] for p in REFERENCE_PROMPTS))
    # What the odd prompts' pictures are closer to: the colour the prompt names, or the thing?
    for k, (key, colour_text, thing_text) in enumerate(OOD_READINGS):
        pictures = by_prompt[len(REFERENCE_PROMPTS) + k]
        readings = encoder.encode_text([colour_text, thing_text])
        f[f"{key}_cosine_colour"] = float(cosine_matrix(pictures, readings[:1]).mean())
        f[f"{key}_cosine_thing"] = float(cosine_matrix(pictures, readings[1:]).mean())

    # Negative prompts: the same seeds with the null and with the negative.
    for key, prompt, negative, colour in NEGATIVES:
        jobs = [Job(prompt, DEFAULT_W, s) for s in seed_list] + [Job(prompt, DEFAULT_W, s, negative=negative)
                                                                 for s in seed_list]
        pictures = pipe.generate(jobs).images
        emb = encoder.encode_image(pictures)
        frames = to_uint8(pictures)
        effect = negative_effect_of(emb, encoder.encode_text([negative, prompt]), prompt, negative, DEFAULT_W)
        likeness = photo_likeness(emb, photos)
        f.update({f"{key}_negative_score_null": effect["clip_score_to_negative"]["null"],
                  f"{key}_negative_score_negative": effect["clip_score_to_negative"]["negative"],
                  f"{key}_prompt_score_null": effect["clip_score_to_prompt"]["null"],
                  f"{key}_prompt_score_negative": effect["clip_score_to_prompt"]["negative"],
                  f"{key}_moved_away": effect["lower_on"]})
        f.update({f"{key}_colour_null": colour_share(frames[:seeds], colour),
                  f"{key}_colour_negative": colour_share(frames[seeds:], colour),
                  f"{key}_photo_likeness_null": float(likeness[:seeds].mean()),
                  f"{key}_photo_likeness_negative": float(likeness[seeds:].mean())})

    # Playback: the cosine of the guided x0 to the prompt, step by step, averaged over seeds.
    jobs = images_per_prompt([PLAYBACK_PROMPT], DEFAULT_W, 0, seeds)
    records = pipe.generate(jobs, steps=playback_steps, record_every=1).records
    curve = prompt_x0_cosines(encoder, records, pipe.encoder.encode_text([PLAYBACK_PROMPT]).expand(seeds, -1))
    mean_curve = curve.mean(1)
    peak = int(mean_curve.argmax())
    dip = peak + int(mean_curve[peak:].argmin())
    f.update(playback_steps=playback_steps, playback_peak_step=peak + 1, playback_peak=float(mean_curve[peak]),
             playback_dip_step=dip + 1, playback_dip=float(mean_curve[dip]), playback_end=float(mean_curve[-1]),
             playback_peak_early_share=float((curve.argmax(0) < 4).mean()))

    # The switch strip, daisy -> sunflower: on how many seeds the picture still follows the daisy.
    jobs = [job for s in seed_list for job in prompt_edits(DAISY, SUNFLOWER, list(SWITCH_FRACTIONS), DEFAULT_W, s)]
    emb = encoder.encode_image(pipe.generate(jobs).images).reshape(seeds, len(SWITCH_FRACTIONS), -1)
    pair = encoder.encode_text([DAISY, SUNFLOWER])
    for k, frac in enumerate(SWITCH_FRACTIONS):
        daisy, sunflower = (clip_score(emb[:, k], pair[t].expand(seeds, -1)) for t in (0, 1))
        f[f"switch_follows_daisy_{round(100 * frac)}"] = float((daisy > sunflower).float().mean())

    f.update(static_figures(encoder, atlas, pipe.config))
    return {"format": "clipdiff-claims-v1", "models": {"unet": pipe.model_id, "clip_identity": encoder.identity},
            "seeds": seeds, "w": DEFAULT_W, "figures": {k: round(float(v), 4) for k, v in f.items()}}


# -- the claims file and the texts -----------------------------------------------------------------------------
def write(claims: dict, path: Path = CLAIMS_PATH) -> None:
    """Save the measurement with the ids of the models in checkpoints/ (the ones it must have been measured on)."""
    atomic_save_json({**claims, "models": {**claims["models"], **shipped_model_ids()}}, Path(path))


def load(path: Path = CLAIMS_PATH) -> dict:
    return read_json(Path(path))


@functools.cache
def figures(path: Path = CLAIMS_PATH) -> dict[str, float]:
    """The committed figures (read once: the texts render from them at every look)."""
    return load(path)["figures"]


class Figures(dict):
    """The figures for str.format_map; a name that was not measured fails loudly, naming itself."""

    def __missing__(self, key):
        raise KeyError(f"no measured claim named {key!r} (clipdiff/claims.py measures them)")


def render(template: str, values: dict | None = None) -> str:
    """A text with its {name:spec} placeholders filled from the measured figures; percentages as {name:.0%}."""
    return template.format_map(Figures(figures() if values is None else values))


def placeholders(template: str) -> list[str]:
    """The figure names a template uses."""
    return [name for _, name, _, _ in string.Formatter().parse(template) if name]


# Lines of the shipped documents that state measured figures, as templates: each must appear, rendered, in its
# document (tests/test_claims.py; `python -m clipdiff claims` lists the ones that no longer hold).
DOCUMENT_CLAIMS: dict[str, tuple[str, ...]] = {
    "README.md": (
        "measured on `{unet_id}` with `eval-gen` (`assets/eval_gen.json`",
        "The app loads `{unet_id}` (U-Net), `{clip_id}` (CLIP) and `{atlas_id}` (atlas)",
        "On the shipped models (`{unet_id}` with `{clip_id}`, `python -m clipdiff claims`, {seeds} seeds per pair, "
        "w = 2, the default sampler):",
        *(f"| {prompt} | {negative} | {{{key}_negative_score_null:.1f}} -> {{{key}_negative_score_negative:.1f}} | "
          f"{{{key}_moved_away:.0%}} | {{{key}_prompt_score_null:.1f}} -> {{{key}_prompt_score_negative:.1f}} | "
          f"{{{key}_colour_null:.0%}} -> {{{key}_colour_negative:.0%}} | "
          f"{{{key}_photo_likeness_null:.2f}} -> {{{key}_photo_likeness_negative:.2f}} |"
          for key, prompt, negative, _ in NEGATIVES),
        "The daisy -> sunflower strip commits early: over {seeds} seeds at 12 steps, the picture still follows the "
        "daisy at f = 0.2 (2 steps of it) on {switch_follows_daisy_20:.0%} of them, at f = 0.3 (4 steps) on "
        "{switch_follows_daisy_30:.0%} and at f = 0.75 on {switch_follows_daisy_75:.0%}. In \"a red rose\", "
        "dropping \"rose\" moves the embedding most (1 - cosine {drop_rose:.3f}), then \"red\" ({drop_red:.3f}), "
        "then \"a\" ({drop_a:.3f}).",
    ),
    "checkpoints/README.md": (
        "The app loads `{unet_id}` (U-Net), `{clip_id}` (CLIP) and `{atlas_id}` (atlas)",
    ),
}


def document_values(claims: dict) -> dict:
    """The figures plus the model ids and the seed count, as the document templates name them."""
    models = claims["models"]
    return {**claims["figures"], "unet_id": models["unet"], "clip_id": models["clip"], "atlas_id": models["atlas"],
            "seeds": claims["seeds"]}


def guidance_table(report: dict) -> list[str]:
    """The README's guidance table rows from eval-gen's report (its first model): w, then one row per figure."""
    results = report["runs"][0]["results"]
    return ([f"| w | {' | '.join(format(r['w'], 'g') for r in results)} |"]
            + [f"| {label} | {' | '.join(format(r[key], spec) for r in results)} |"
               for label, key, spec in GUIDANCE_ROWS])


def fast_table(report: dict, bench: dict) -> list[str]:
    """The fast mode against its teacher, from eval-gen's report (the teacher's run first, then the student's at
    each step count, the yardstick at w = 2; how much w changes each run's pictures) and bench's generate_4_s and
    generate_4_s_fast (one machine, one run)."""
    teacher, *students = report["runs"]
    first = teacher["species"][0]
    timed = {teacher["steps"]: bench["generate_4_s"], bench["fast_steps"]: bench["generate_4_s_fast"]}
    span = teacher.get("w_response", {})
    w_head = f"w {span['w_from']:g} -> {span['w_to']:g} changes pictures by" if span else "w changes pictures by"
    rows = ["| sampler | steps | U-Net forwards per image | yardstick FD | FD / teacher's | species accuracy | "
            f"{w_head} | generate_4_s |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for run, forwards in [(teacher, 2 * teacher["steps"])] + [(r, r["steps"]) for r in students]:
        species = run["species"][0]
        seconds = timed.get(run["steps"]) if run is teacher or run["steps"] == bench["fast_steps"] else None
        who = "teacher" if run is teacher else "student"
        levels = run.get("w_response", {}).get("uint8_levels")
        rows.append(f"| {run['sampler']} ({who}) | {run['steps']} | {forwards} | {species['fd']:.1f} | "
                    f"{species['fd'] / first['fd']:.2f}x | {species['accuracy']:.3f} | "
                    f"{'-' if levels is None else format(levels, '.1f') + ' uint8 levels'} | "
                    f"{'-' if seconds is None else format(seconds, '.2f') + ' s'} |")
    return rows


def fast_claims(root: Path = PROJECT_ROOT) -> tuple[dict, dict] | None:
    """eval-gen's and bench's fast-mode reports, where a student is shipped (None: no checkpoints/fast)."""
    if not (DEFAULT_FAST_DIR / "model.safetensors").is_file():
        return None
    return read_json(root / FAST_REPORT_PATH.relative_to(PROJECT_ROOT)), \
        read_json(root / FAST_BENCH_PATH.relative_to(PROJECT_ROOT))


def stale_texts(claims: dict | None = None, root: Path = PROJECT_ROOT) -> list[str]:
    """Each document line whose rendered template (or guidance-table row) is not in its document, as
    'file: expected line'."""
    values = document_values(claims or load())
    stale = []
    for name, templates in DOCUMENT_CLAIMS.items():
        text = one_line((root / name).read_text())        # a sentence may wrap anywhere in the Markdown
        stale += [f"{name}: {line}" for line in (render(t, values) for t in templates) if one_line(line) not in text]
    readme = (root / "README.md").read_text()
    stale += [f"README.md: {row}" for row in guidance_table(read_json(GUIDANCE_PATH)) if row not in readme]
    fast = fast_claims(root)
    if fast is not None:
        for name in FAST_DOCUMENTS:
            text = (root / name).read_text()
            stale += [f"{name}: {row}" for row in fast_table(*fast) if row not in text]
    return stale


def one_line(text: str) -> str:
    return " ".join(text.split())


def stale_models(claims: dict | None = None) -> list[str]:
    """The models whose shipped weights differ from the ones the claims were measured on."""
    recorded, shipped = (claims or load())["models"], shipped_model_ids()
    stale = [f"{name}: measured on {recorded.get(name)}, shipped {ids}" for name, ids in shipped.items()
             if recorded.get(name) != ids]
    guidance = read_json(GUIDANCE_PATH)["runs"][0]["model"]
    if guidance != shipped["unet"]:
        stale.append(f"{GUIDANCE_PATH.name}: measured on {guidance}, shipped {shipped['unet']} (python -m clipdiff "
                     "eval-gen --w -2 --w -1 --w -0.5 --w 0 --w 0.5 --w 1 --w 2 --n 8 --json assets/eval_gen.json)")
    return stale + stale_fast(shipped["unet"])


def stale_fast(teacher: str) -> list[str]:
    """The fast-mode reports that were not measured on the shipped student and its teacher."""
    fast = fast_claims()
    if fast is None:
        return []
    report, bench = fast
    student = weights_id(DEFAULT_FAST_DIR, "model.safetensors")
    measured = {FAST_REPORT_PATH.name: (report["runs"][0]["model"], report["runs"][1]["model"].split(" ")[0]),
                FAST_BENCH_PATH.name: (bench["model"], bench["fast_model"])}
    return [f"{name}: measured on {pair}, shipped ({teacher!r}, {student!r}) (README: Fast mode)"
            for name, pair in measured.items() if pair != (teacher, student)]
