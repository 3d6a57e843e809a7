"""What the prompt-debugging tools (issue 15) show on a model: run it on whatever checkpoints/ holds (the shipped
models are retrained from time to time; the README's figures say which model they were measured on).

    python benchmarks/prompt_debugging.py --json benchmarks/prompt_debugging.json

- negative prompts: the same seeds with the learned null and with a negative prompt; the images' cosine and CLIP
  score to the negative prompt either way, and on how many seeds the negative moved the image away from it;
- word importance: the words of a few prompts ranked by 1 - cosine(full prompt, prompt without the word);
- prompt editing: the daisy -> sunflower switch strip over seeds: CLIP score against either prompt per f.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from clipdiff import tour  # noqa: E402
from clipdiff.checkpoints import DEFAULT_UNET_DIR  # noqa: E402
from clipdiff.evaluate import negative_effect  # noqa: E402
from clipdiff.pipeline import REFERENCE_PROMPTS, ClipDiffusionPipeline, prompt_edits  # noqa: E402
from clipdiff.similarity import clip_score  # noqa: E402
from clipdiff.wording import word_importance  # noqa: E402

DAISY, SUNFLOWER, ROSE = REFERENCE_PROMPTS
NEGATIVES = [("A rose", "red"), (SUNFLOWER, "orange"), (DAISY, "yellow"), (ROSE, "red")]
WORDS = ["a red rose", ROSE, tour.WORDY_CAPTION]
FRACTIONS = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0]


def switch_strip(pipe, seeds: list[int]) -> list[dict]:
    """Per f: the mean CLIP score of the strip's images against the first prompt and against the second."""
    jobs = [job for seed in seeds for job in prompt_edits(DAISY, SUNFLOWER, FRACTIONS, 2.0, seed)]
    image_emb = pipe.encoder.encode_image(pipe.generate(jobs).images).reshape(len(seeds), len(FRACTIONS), -1)
    text_emb = pipe.encoder.encode_text([DAISY, SUNFLOWER])
    rows = []
    for k, f in enumerate(FRACTIONS):
        scores = [clip_score(image_emb[:, k], text_emb[t].expand(len(seeds), -1)) for t in (0, 1)]
        rows.append({"f": f, "clip_score_a": round(float(scores[0].mean()), 1),
                     "clip_score_b": round(float(scores[1].mean()), 1),
                     "follows_a": round(float((scores[0] > scores[1]).float().mean()), 2)})
    return rows


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--unet", default=str(DEFAULT_UNET_DIR))
    parser.add_argument("--clip", default="default")
    parser.add_argument("--seeds", type=int, default=32, help="seeds per negative prompt (default 32)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    pipe = ClipDiffusionPipeline.load(args.unet, args.clip, device="cpu")
    started = time.perf_counter()
    seeds = list(range(args.seeds))
    figures = {"model": pipe.model_id, "clip": pipe.encoder.identity,
               "negative": [negative_effect(pipe, p, n, seeds) for p, n in NEGATIVES],
               "words": [], "switch": switch_strip(pipe, seeds[:8])}
    for prompt in WORDS:
        result = word_importance(pipe, prompt, 2.0, 0)
        figures["words"].append({**result.to_json(), "ranking": result.ranking()})
    figures["seconds"] = round(time.perf_counter() - started, 1)
    print(f"model {figures['model']}\n\n| prompt | negative | CLIP score to the negative: null -> negative | cosine: "
          "null -> negative | seeds moved away | CLIP score to the prompt |\n| --- | --- | --- | --- | --- | --- |")
    for r in figures["negative"]:
        print(f"| {r['prompt']} | {r['negative']} | {r['clip_score_to_negative']['null']:.1f} -> "
              f"{r['clip_score_to_negative']['negative']:.1f} | {r['cosine_to_negative']['null']:.3f} -> "
              f"{r['cosine_to_negative']['negative']:.3f} | {r['lower_on']:.0%} of {r['seeds']} | "
              f"{r['clip_score_to_prompt']['null']:.1f} -> {r['clip_score_to_prompt']['negative']:.1f} |")
    for w in figures["words"]:
        ranked = ", ".join(f"{word} ({1 - w['text_cosine'][w['words'].index(word)]:.3f})" for word in w["ranking"][:6])
        print(f"\n{w['prompt']!r}: {ranked}")
    print("\n| f | CLIP score vs daisy | vs sunflower | seeds following the daisy |\n| --- | --- | --- | --- |")
    for r in figures["switch"]:
        print(f"| {r['f']:g} | {r['clip_score_a']} | {r['clip_score_b']} | {r['follows_a']:.0%} |")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1) + "\n")
    return figures


if __name__ == "__main__":
    main()
