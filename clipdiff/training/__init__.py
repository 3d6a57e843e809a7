"""Training the models: the trainers and their `python -m clipdiff train-*` entry points.

    common.py         what every trainer shares: deterministic data order, resumable run state, learning-rate
                      shape, EMA, loss and metric logs, precision, the time budget
    train_clip.py     `train-clip`: the embedded flowers CLIP (open_clip), exported for the app
    train_unet.py     `train-unet`: the diffusion U-Net on precomputed embeddings (Accelerate)
    yardstick.py      `train-yardstick`: the species classifier that judges generated flowers apart from the
                      CLIP (used by train-unet's curves and eval-gen's --species figures)
    recipe.py         the shipped recipe's stages as data (model, start, steps, batch, lr, EMA, conditioning CLIP),
                      their records (checkpoints/stages.json) and what a step costs on a CPU or a GPU
    model_card.py     checkpoints/README.md, rendered from the models' files and the stages' records
    train_default.py  `train-default`: the recipe's stages end to end (CLIP stages, U-Net stages, evaluation,
                      embeddings, atlas, records, card), each resumable

Imports run one way: this package uses the core (clipdiff.*) and never the commands, the app or serving.
"""
