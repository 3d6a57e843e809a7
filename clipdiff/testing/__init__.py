"""What the tests and the benchmark scripts share (never a test module): tiny random models and data (tiny.py),
awkward upload files (files.py), the app on a free loopback port, in this process or another (live.py), a headless
Chromium page (browser.py), and the hardening runs against a live app: fuzz, load, cancel, memory, a full queue
(stress.py).

The tests' fixtures (tests/conftest.py) are thin wrappers over these. Nothing here imports pytest; gradio and
hypothesis are imported only by the functions that drive an app.
"""
from .tiny import (TINY_CLIP_CONFIG, make_image_folder, make_tiny_clip, make_tiny_student, make_tiny_unet,
                   tiny_student, tiny_training_flags, tiny_unet_config, write_tiny_atlas)
from .files import awkward_uploads, bomb_png, refused_uploads, solid_image
from .live import free_port

__all__ = ["TINY_CLIP_CONFIG", "make_image_folder", "make_tiny_clip", "make_tiny_student", "make_tiny_unet",
           "tiny_student", "tiny_training_flags",
           "tiny_unet_config",
           "write_tiny_atlas", "awkward_uploads", "bomb_png", "refused_uploads", "solid_image", "free_port"]
