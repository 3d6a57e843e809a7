"""The app: one gr.Blocks holding the tabs, and how it is served (safe defaults: local only, capped uploads)."""
from __future__ import annotations

import logging

import gradio as gr

from .context import Context, Models
from .page import CSS, JS, THEME
from .limits import (MAX_UPLOAD_SIZE, MODEL_CONCURRENCY, OUTPUT_MAX_AGE_S, PREVIEW_EVERY_S, QUEUE_POLL_S, QUEUE_SIZE,
                     SESSION_TTL_S)
from .history import history_state
from .session import last_run_state
from ..wall import Wall
from .tabs import compare, debug, embed_map, generate, interpolate, photo, playback, similarity, sweep, tour, wall
from .wiring import Shared

log = logging.getLogger("clipdiff.app")

# after the Tour, in this order
TABS = (generate, sweep, playback, compare, photo, similarity, embed_map, interpolate, debug, wall)
TITLE = "# clipdiff: CLIP-conditioned diffusion you can watch\n"


def build_app(models: Models, concurrency: int = MODEL_CONCURRENCY, preview_every_s: float = PREVIEW_EVERY_S,
              session_ttl_s: float = SESSION_TTL_S, room_wall: Wall | None = None) -> gr.Blocks:
    """preview_every_s: at most one streamed preview this often while sampling (0: after every step); room_wall:
    the room's wall (app.py --wall; None: off)."""
    ctx = Context.create(models, concurrency, preview_every_s, session_ttl_s, room_wall)
    if room_wall is not None:
        gr.set_static_paths([room_wall.folder])    # its PNGs served as they are, not copied per refresh
    with gr.Blocks(title="clipdiff", analytics_enabled=False, delete_cache=(1800, OUTPUT_MAX_AGE_S)) as demo:
        gr.Markdown(TITLE + models.status_markdown(), elem_id="model-status")
        shared, pages, tour_page, note = lay_out(ctx, demo)
        for tab, page in pages.items():
            tab.wire(ctx, page, shared)
        wall.wire_generate(ctx, pages[wall], pages[generate], shared)
        tour.wire(ctx, tour_page, shared, pages, note)
    return demo


def lay_out(ctx: Context, demo: gr.Blocks) -> tuple[Shared, dict, tour.TourTab, tour.TourNote]:
    """The tour's note, the tabs and the session's state, in the open `demo`, and what links them (unwired)."""
    last_run = last_run_state(ctx.session_ttl_s)
    note = tour.build_note()
    with gr.Tabs() as tab_switcher:
        tour_page = tour.build()
        pages = {tab: tab.build(ctx) for tab in TABS}
    shared = Shared(demo, tab_switcher, last_run, history=history_state(ctx.session_ttl_s))
    shared.after_run += [playback.show_call(ctx, pages[playback], last_run),   # what follows every new run
                         similarity.rank_call(pages[similarity], last_run), compare.record_call(pages[compare], shared)]
    return shared, pages, tour_page, note


def calm_queue(demo: gr.Blocks, poll_s: float = QUEUE_POLL_S) -> None:
    """Gradio's queue polls every poll_s instead of every millisecond (a no-op, logged, on a Gradio without it)."""
    queue = getattr(demo, "_queue", None)
    if queue is None or not hasattr(queue, "sleep_when_free"):
        log.warning("this Gradio's queue has no sleep_when_free: it polls at its own rate")
        return
    queue.sleep_when_free = poll_s


def serve(demo: gr.Blocks, host: str = "127.0.0.1", port: int | None = None, share: bool = False,
          concurrency: int = MODEL_CONCURRENCY, max_queue: int = QUEUE_SIZE, prevent_thread_lock: bool = False,
          quiet: bool = False, auth: list[tuple[str, str]] | None = None):
    """Queue, then launch with the safe defaults: local only, no share link, capped uploads, no extras.
    auth: (user, password) logins that the page and the API ask for (None: no login)."""
    demo.queue(max_size=max_queue, default_concurrency_limit=concurrency)
    calm_queue(demo)
    return demo.launch(server_name=host, server_port=port, share=share, max_file_size=MAX_UPLOAD_SIZE,
                       show_error=True, ssr_mode=False, mcp_server=False, enable_monitoring=False, pwa=False,
                       prevent_thread_lock=prevent_thread_lock, quiet=quiet, css=CSS, js=JS, theme=THEME,
                       auth=auth)
