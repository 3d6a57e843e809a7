"""clipdiff: CLIP-conditioned diffusion you can watch, on a CPU."""
__version__ = "0.1.0"
