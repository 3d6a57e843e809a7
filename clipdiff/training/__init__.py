"""Training the models: the trainers and their `python -m clipdiff train-*` entry points.

    common.py         what every trainer shares: deterministic data order, resumable run state, learning-rate
                      shape, EMA, loss and metric logs, precision, the time budget
    train_clip.py     `train-clip`: the embedded flowers CLIP (open_clip), exported for the app
    train_unet.py     `train-unet`: the diffusion U-Net on precomputed embeddings (Accelerate)
    yardstick.py      `train-yardstick`: the species classifier that judges generated flowers apart from the
                      CLIP (used by train-unet's curves and eval-gen's --species figures)
    train_default.py  `train-default`: the shipped models end to end (CLIP, embeddings, atlas, U-Net, card)

Imports run one way: this package uses the core (clipdiff.*) and never the commands, the app or serving.
"""
