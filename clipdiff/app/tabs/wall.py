"""The Wall tab: the room's published images (clipdiff.wall), newest first with prompt and settings, refreshed on its
own; "Try this" fills Generate with an item's settings, read as a share link's (links.controls_from_query). The
publish buttons sit under Generate's results and publish the session's last run: its best image or all of them.
Off unless the server starts with --wall: then the tab says so and the endpoints refuse."""
from __future__ import annotations

import time
from dataclasses import dataclass

import gradio as gr
import numpy as np

from ...wall import Wall, WallItem, clean_text, new_token
from ..context import Context
from ..errors import answers_clearly
from ..inputs import Checked
from ..limits import WALL_REFRESH_S
from ..links import controls_from_query, link_values
from ..session import LastRun
from ..wiring import PRIVATE, Call, Shared, bind
from .generate import GenerateTab, prompt_of

TAKES = ()
OFF = ("**The wall is off.** The server was started without `--wall`, so nothing can be published here. "
       "(An instructor starts it with `python app.py --wall FOLDER`.)")
ITEM_ID_CHARS = 32
MAX_KEY_CHARS = 200


# -- handlers ------------------------------------------------------------------------------------------------------
def need_wall(ctx: Context) -> Wall:
    if ctx.wall is None:
        raise gr.Error("The wall is off: this server was started without --wall.")
    return ctx.wall


@answers_clearly
def publish(ctx: Context, which, run, token):
    """Publish the session's last run to the wall: its best image (highest CLIP score) or "all". Each item keeps
    the image's prompt and settings as a share link's parameters. The session's publisher token (made on its first
    publish, kept server-side in the session's state) is what later lets it remove its own items. Returns the
    status, the token and the id of the first item published (selected for "Remove")."""
    wall = need_wall(ctx)
    if not isinstance(run, LastRun) or not run.params:
        raise gr.Error("Nothing to publish yet: generate some images first; the wall takes a finished run's images.")
    token = token if isinstance(token, str) and token else new_token()
    indices = range(len(run.params)) if which == "all" else [int(np.argmax(run.scores))]
    checked = Checked(quiet=True)
    published = []
    for i in indices:
        p = run.params[i]
        prompt = prompt_of(p, checked)
        settings = link_values(prompt, p.get("negative_prompt", ""), p.get("w"), p.get("steps"), p.get("sampler"),
                               p.get("seed"), 1)
        published.append(wall.publish(run.frames[i], prompt, settings, token, p))
    count = f"{len(published)} images" if len(published) > 1 else "your best image"
    return (f"Published {count} to the room's wall (the Wall tab). You can remove them there while this page "
            "stays open."), token, published[0].id


def caption(item: WallItem) -> str:
    """What the wall says under a picture, as plain text: prompt, settings, when."""
    s = item.settings
    parts = [item.title or "(no prompt)", f"w {s.get('w', '?')}", f"{s.get('steps', '?')} {s.get('sampler', '?')} "
             f"steps", f"seed {s.get('seed', '?')}"]
    if s.get("negative"):
        parts.append(f"negative: {s['negative']}")
    parts.append(time.strftime("%H:%M", time.localtime(item.created)))
    return " | ".join(parts)


@answers_clearly
def show_wall(ctx: Context, seen=None):
    """The wall newest first: (gallery of (PNG, caption), the items' ids in that order, the wall's version, a
    count); nothing new (every output skipped) when the wall has not changed since this session's `seen` version,
    so the page's timer costs next to nothing."""
    if ctx.wall is None:
        return [], [], None, OFF
    version = ctx.wall.version
    if seen == version:
        return gr.skip(), gr.skip(), gr.skip(), gr.skip()
    items = ctx.wall.items()
    gallery = [(str(ctx.wall.image_path(item)), caption(item)) for item in items]
    count = f"{len(items)} image(s) on the wall (at most {ctx.wall.max_items}; the oldest go first), newest first. " \
        "Click one, then **Try this** or **Remove**." if items else "Nothing on the wall yet: generate, then press " \
        "**Publish** under the results."
    return gallery, [item.id for item in items], version, count


@answers_clearly
def read_wall(ctx: Context):
    """The whole wall as it is now (the Refresh button, and API clients): gallery and count."""
    gallery, _, _, count = show_wall(ctx, None)
    return gallery, count


def select_item(shown, evt: gr.SelectData):
    """The clicked picture's item id (the gallery lists `shown`'s ids in order)."""
    index = evt.index if isinstance(evt.index, int) else -1
    return shown[index] if isinstance(shown, list) and 0 <= index < len(shown) else ""


def item_id_of(value) -> str:
    """An item id as the browser or an API client sends it: 32 hex digits, or ''."""
    value = clean_text(value if isinstance(value, str) else "", ITEM_ID_CHARS + 1)
    return value if len(value) == ITEM_ID_CHARS and all(c in "0123456789abcdef" for c in value) else ""


@answers_clearly
def remove(ctx: Context, item_id, admin_key, token):
    """Remove an item: only its publisher (this session's token) or an instructor with the admin key may. The id
    alone proves nothing (anyone can see it)."""
    wall = need_wall(ctx)
    item_id = item_id_of(item_id)
    if not item_id:
        raise gr.Error("Click one of the wall's pictures first.")
    key = admin_key[:MAX_KEY_CHARS] if isinstance(admin_key, str) else ""
    if wall.get(item_id) is None:
        raise gr.Error("That picture is no longer on the wall.")
    if not wall.remove(item_id, token if isinstance(token, str) else None, key):
        raise gr.Error("Only the one who published this picture (from the same page, while it stays open) or the "
                       "instructor (with the instructor key) can remove it.")
    return "Removed from the wall.", ""


@answers_clearly
def try_this(ctx: Context, item_id):
    """Generate's controls (prompts, w, steps, sampler, seed, images per prompt, negative) from a wall item's
    settings, read with a share link's checks; and the page switched to Generate. Nothing runs by itself."""
    wall = need_wall(ctx)
    item = wall.get(item_id_of(item_id))
    if item is None:
        raise gr.Error("Click one of the wall's pictures first (it may have been removed meanwhile).")
    return (*controls_from_query(item.settings), gr.Tabs(selected="generate"))


# -- layout and wiring ---------------------------------------------------------------------------------------------
@dataclass
class WallTab:
    status: gr.Markdown
    gallery: gr.Gallery
    selected: gr.Textbox
    try_button: gr.Button
    remove_button: gr.Button
    refresh: gr.Button
    admin_key: gr.Textbox
    shown: gr.State          # the item ids the gallery shows, in order
    seen: gr.State           # the wall's version the gallery shows
    token: gr.State          # this session's publisher token
    timer: gr.Timer


def build(ctx: Context) -> WallTab:
    on = ctx.wall is not None
    with gr.Tab("Wall", id="wall"):
        status = gr.Markdown(OFF if not on else "", elem_id="wall-status")
        with gr.Row(visible=on, equal_height=True):
            selected = gr.Textbox(label="selected picture (click one)", interactive=False, elem_id="wall-selected",
                                  scale=3, max_length=ITEM_ID_CHARS)
            try_button = gr.Button("Try this", variant="primary", elem_id="wall-try", scale=1)
            remove_button = gr.Button("Remove", variant="stop", elem_id="wall-remove", scale=1)
            refresh = gr.Button("Refresh now", elem_id="wall-refresh", scale=1)
        gallery = gr.Gallery(label="the room's wall (captions: prompt | w | steps | seed | time)", columns=8,
                             height=520, object_fit="contain", format="png", allow_preview=True, interactive=False,
                             elem_id="wall-gallery", elem_classes=["pixelated", "results"], visible=on)
        with gr.Accordion("Instructor", open=False, visible=on):
            admin_key = gr.Textbox(label="instructor key (app.py --wall-admin-file): Remove then removes anyone's "
                                         "picture", type="password", max_length=MAX_KEY_CHARS,
                                   elem_id="wall-admin-key")
        shown, seen, token = gr.State([]), gr.State(None), gr.State(None)
        timer = gr.Timer(WALL_REFRESH_S, active=on)
    return WallTab(status, gallery, selected, try_button, remove_button, refresh, admin_key, shown, seen, token, timer)


def wire(ctx: Context, tab: WallTab, shared: Shared) -> None:
    refresh = Call(bind(show_wall, ctx), [tab.seen], [tab.gallery, tab.shown, tab.seen, tab.status])
    refresh.on(tab.timer.tick, show_progress="hidden", **PRIVATE)
    refresh.on(shared.demo.load, show_progress="hidden", **PRIVATE)
    Call(bind(read_wall, ctx), None, [tab.gallery, tab.status]).on(tab.refresh.click, api_name="wall")
    Call(select_item, tab.shown, tab.selected).on(tab.gallery.select, show_progress="hidden", **PRIVATE)
    removal = Call(bind(remove, ctx), [tab.selected, tab.admin_key, tab.token], [tab.status, tab.selected],
                   status=tab.status).on(tab.remove_button.click, api_name="remove_from_wall")
    refresh.on(removal.success, show_progress="hidden", **PRIVATE)   # the wall's count back in the status


def wire_generate(ctx: Context, tab: WallTab, generate: GenerateTab, shared: Shared) -> None:
    """What links the wall to Generate: the publish buttons under its results, and "Try this" filling its
    controls."""
    row = generate.publish
    for button, which in ((row.best, "best"), (row.all, "all")):
        published = Call(bind(publish, ctx), [gr.State(which), shared.last_run, tab.token],
                         [row.status, tab.token, tab.selected], status=row.status).on(button.click,
                                                                                      api_name=f"publish_{which}")
        Call(bind(show_wall, ctx), [tab.seen], [tab.gallery, tab.shown, tab.seen, tab.status]).on(
            published.success, show_progress="hidden", **PRIVATE)
    Call(bind(try_this, ctx), tab.selected, [*generate.inputs, shared.tabs], status=tab.status).on(
        tab.try_button.click, api_name="try_this")
