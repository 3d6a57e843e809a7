"""Serving a room: the sampler as a model tier that many fronts share, and the pieces around it.

    batching.py     several requests' U-Net inputs in one forward, the outputs split back; StepBatcher, the local
                    backend's model thread that answers every run in flight with one forward per step
    loop.py         one request's guided sampling loop over an awaited (batched) predictor
    backend.py      what the app runs a job list through: `local` (in process) or `ray` (a Serve deployment)
    ray_sampler.py  the Ray Serve `Sampler` deployment and its client, RaySamplerBackend (imports Ray)
    fairness.py     one generation in flight per browser session

The room simulator that measures all this is a command (clipdiff/commands/room.py). Nothing here imports
Gradio, and only ray_sampler.py imports Ray (the plain app does not need it).
"""
