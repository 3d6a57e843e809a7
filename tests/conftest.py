"""Fixtures over clipdiff.testing: tiny random models and data, made fresh for each test session (tests never need
the shipped weights), the app's models and context over them, the live app, and its console's unhandled errors."""
from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
import torch

from clipdiff.testing import make_image_folder, make_tiny_clip, make_tiny_student, make_tiny_unet, write_tiny_atlas

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# One thread: the tiny models gain nothing from more, and when other work keeps the cores busy, OpenMP's waiting
# threads made every U-Net call ~100x slower (benchmarks/README.md measures the same on the shipped models).
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory) -> Path:
    return make_tiny_clip(tmp_path_factory.mktemp("clip"))


@pytest.fixture(scope="session")
def tiny_unet_dir(tmp_path_factory, tiny_clip_dir) -> Path:
    return make_tiny_unet(tmp_path_factory.mktemp("unet"), f"local-dir:{tiny_clip_dir}")


@pytest.fixture(scope="session")
def fast_dir(tmp_path_factory, tiny_unet_dir) -> Path:
    """A saved fast-mode student of the tiny teacher (named after it, so the pipeline takes it)."""
    return make_tiny_student(tmp_path_factory.mktemp("fast"), tiny_unet_dir)


@pytest.fixture(scope="session")
def tiny_pipeline(tiny_clip_dir, tiny_unet_dir):
    from clipdiff.pipeline import ClipDiffusionPipeline

    return ClipDiffusionPipeline.load(tiny_unet_dir, clip=str(tiny_clip_dir), device="cpu")


@pytest.fixture(scope="session")
def tiny_atlas_dir(tmp_path_factory, tiny_pipeline) -> Path:
    return write_tiny_atlas(tmp_path_factory.mktemp("atlas"), tiny_pipeline.encoder)


@pytest.fixture(scope="session")
def tiny_models(tiny_clip_dir, tiny_unet_dir, tiny_atlas_dir):
    """The app's models over the tiny CLIP, U-Net and atlas, loaded once."""
    pytest.importorskip("gradio")
    from clipdiff.app.context import Models

    models = Models.load(tiny_unet_dir, str(tiny_clip_dir), None, tiny_atlas_dir, "cpu")
    assert models.problems == []
    return models


class GatedBackend:
    """The local backend, but the first run pauses after its first step until `release` is set; later runs go
    straight through. `started` counts the runs that reached the sampler."""

    def __init__(self):
        from clipdiff.serving.backend import LocalBackend

        self.local = LocalBackend()
        self.holding, self.release = threading.Event(), threading.Event()
        self.started = 0

    def run(self, pipe, run, record_every=0):
        self.started += 1
        held = self.started == 1
        for p in self.local.run(pipe, run, record_every):
            yield p
            if held and p.step == 1:
                self.holding.set()
                self.release.wait(timeout=120)

    def describe(self) -> dict:
        return self.local.describe()

    def close(self) -> None:
        self.release.set()


@pytest.fixture
def gated_models(tiny_clip_dir, tiny_unet_dir):
    """The app's models (no atlas) with a GatedBackend: a session's first run can be held in flight."""
    pytest.importorskip("gradio")
    from clipdiff.app.context import Models

    models = Models.load(tiny_unet_dir, str(tiny_clip_dir), None, None, "cpu")
    models.backend = GatedBackend()
    yield models
    models.backend.release.set()


@pytest.fixture
def ctx(tiny_models):
    """What a handler gets first, as the app makes it, with a preview after every sampler step (so counts do
    not depend on the machine's speed). Handlers are called with it directly, no server."""
    from clipdiff.app.context import Context

    return Context.create(tiny_models, preview_every_s=0)


@pytest.fixture(scope="session")
def live_app(tiny_models):
    """The real app over the tiny models on a free loopback port, one model run at a time (as on a 2-core laptop),
    a preview after every step. One for the whole session: every client is a session of its own."""
    pytest.importorskip("gradio_client")
    from clipdiff.testing.live import app_in_this_process

    with app_in_this_process(tiny_models, concurrency=1, preview_every_s=0) as app:
        yield app


@pytest.fixture
def client(live_app):
    """A gradio_client session of its own on the live app, closed after the test."""
    from gradio_client import Client

    c = Client(live_app.url, verbose=False)
    yield c
    c.close()


@pytest.fixture
def server_errors(capfd):
    """The unhandled errors the server printed during this test: Gradio prints a traceback for every failed
    event, and clipdiff.testing.live.unhandled_in_log keeps those that were not clean refusals."""
    from clipdiff.testing.live import unhandled_in_log

    seen: list[str] = []

    def unhandled() -> list[str]:
        seen.extend(unhandled_in_log(capfd.readouterr().err))
        return list(seen)
    return unhandled


def browser_page(width: int, height: int):
    from clipdiff.testing.browser import CHROMIUM, chromium_page, have_chromium

    if not have_chromium():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install -y chromium)")
    pytest.importorskip("playwright.sync_api")
    return chromium_page(width, height)


@pytest.fixture
def page():
    """A headless Chromium page at 1280 x 1200; the test is skipped where Chromium or Playwright is missing."""
    with browser_page(1280, 1200) as page:
        yield page


@pytest.fixture
def laptop():
    """A headless Chromium page at 1280 x 800, an attendee's laptop screen (LAPTOP in clipdiff.testing.browser)."""
    from clipdiff.testing.browser import LAPTOP

    with browser_page(*LAPTOP) as page:
        yield page


@pytest.fixture
def image_folder(tmp_path) -> Path:
    return make_image_folder(tmp_path / "images")
