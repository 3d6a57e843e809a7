"""The command-line entry points of `python -m clipdiff COMMAND` that are not training (those are in
clipdiff.training): each module's main() parses flags, calls the core and prints or writes what it found.

    cli_sample.py      `sample`: prompts x guidance weights -> PNGs, grid.png, manifest.json
    cli_embed.py       `embed`: CLIP embeddings of a training set, precomputed (optionally as CSV)
    cli_eval.py        `eval-clip`, `eval-gen`: the CLIP on held-out images; generations per w
    cli_vocabulary.py  `vocabulary`: the training captions' words counted (clipdiff.vocabulary counts them)
    bench.py           `bench`: speed on this machine against the targets and the reference procedure
    room.py            `room`: a simulated workshop room against a live app

Imports run one way: commands use the core and clipdiff.training (eval-gen's yardstick), bench starts a live app
through clipdiff.testing.live; nothing else in the package imports a command (clipdiff.__main__ looks
them up by name).
"""
