"""python -m clipdiff COMMAND ...: sample, embed, train-clip, train-unet, train-fast, train-default, eval-clip, eval-gen,
claims, vocabulary, bench, room (see --help of each). A command is a module's main(), or "module:function" for another
function of it."""
from __future__ import annotations

import sys

COMMANDS = {
    "sample": ("clipdiff.commands.cli_sample",
               "generate images: prompts x guidance weights -> PNGs, grid.png, manifest.json"),
    "embed": ("clipdiff.commands.cli_embed", "precompute CLIP embeddings of a training set (optionally as CSV)"),
    "train-clip": ("clipdiff.training.train_clip", "train the embedded flowers CLIP"),
    "train-unet": ("clipdiff.training.train_unet", "train the diffusion U-Net on precomputed embeddings"),
    "train-fast": ("clipdiff.training.train_fast",
                   "distil the fast mode's student (w as an input, 1-8 steps) from the diffusion U-Net"),
    "train-yardstick": ("clipdiff.training.yardstick",
                        "train the species classifier behind eval-gen's independent yardstick"),
    "train-default": ("clipdiff.training.train_default",
                      "rebuild the shipped models with the stages that trained them (--dry-run: the plan)"),
    "eval-clip": ("clipdiff.commands.cli_eval:main_clip",
                  "the CLIP on held-out images: caption->image recall, zero-shot"),
    "eval-gen": ("clipdiff.commands.cli_eval:main_gen",
                 "generations per w: CLIP score, FD and CMMD in CLIP space, diversity"),
    "claims": ("clipdiff.commands.cli_claims",
               "re-measure what the tour, info texts and docs claim about the shipped models (checkpoints/claims.json)"),
    "vocabulary": ("clipdiff.commands.cli_vocabulary",
                   "count the training captions' words: what the token view marks as unknown"),
    "bench": ("clipdiff.commands.bench", "speed on this machine against the targets and the reference procedure"),
    "room": ("clipdiff.commands.room", "a simulated workshop room against a live app: images/s, p50, p95, errors"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        width = max(map(len, COMMANDS))
        print("usage: python -m clipdiff COMMAND [options]\n\ncommands:")
        for name, (_, help_text) in COMMANDS.items():
            print(f"  {name:<{width}}  {help_text}")
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    import importlib

    module_name, _, function = COMMANDS[argv[0]][0].partition(":")
    return getattr(importlib.import_module(module_name), function or "main")(argv[1:]) or 0


if __name__ == "__main__":
    sys.exit(main())
