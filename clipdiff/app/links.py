"""Share a run by link: its settings (prompts, negative prompt, w, steps, sampler, seed, images per prompt; a prompt
switch rides in the prompt as [from:to:when]) as the page URL's query. Opened, the link fills the Generate controls
and a click of Generate makes the same pictures; nothing runs by itself. A link is text anyone can send, so it is read
with the same checks as any request: clamped, cleaned, and refused values simply left at the page's defaults."""
from __future__ import annotations

from urllib.parse import urlencode

import gradio as gr

from .inputs import Checked, clean_line
from .limits import MAX_IMAGES_PER_PROMPT, MAX_PROMPTS, MAX_TEXT_CHARS, SAMPLERS, SEED_RANGE

KEYS = ("prompt", "negative", "w", "steps", "sampler", "seed", "n")


def link_values(prompts_text, negative, w, steps, sampler, seed, n_images) -> dict[str, str]:
    """These Generate settings as a link's parameters (KEYS, checked, as text; no empty ones); {} when the prompt box
    is empty or a value is refused. The wall keeps an item's settings in this form too, so "try this" reads them
    back as a link's (controls_from_query)."""
    checked = Checked(quiet=True)
    try:
        prompts = checked.lines(prompts_text, MAX_PROMPTS)
        s = checked.sampling(w, seed, steps, sampler)
        n = checked.number(n_images, "images per prompt", 1, MAX_IMAGES_PER_PROMPT, integer=True, default=1)
        negative = checked.negative(negative)
    except gr.Error:
        return {}
    values = {"prompt": "\n".join(prompts), "negative": negative, "w": f"{s.w:g}", "steps": str(s.steps),
              "sampler": s.sampler, "seed": str(s.seed), "n": str(n)}
    return {k: v for k, v in values.items() if v != ""}


def link_query(prompts_text, negative, w, steps, sampler, seed, n_images) -> str:
    """The query (`?prompt=...&w=...`) that reopens these Generate settings; '' when the prompt box is empty."""
    values = link_values(prompts_text, negative, w, steps, sampler, seed, n_images)
    return "?" + urlencode(values) if values else ""


def controls_from_query(query: dict) -> tuple:
    """A link's query as the Generate controls (prompts, w, steps, sampler, seed, images per prompt, negative);
    a missing or unusable value leaves its control as it is (gr.skip())."""
    query = {k: v for k, v in dict(query or {}).items() if k in KEYS and isinstance(v, str)}
    if "prompt" not in query:
        return (gr.skip(),) * 7
    checked = Checked(quiet=True)

    def read(fn):
        try:
            return fn()
        except gr.Error:
            return gr.skip()

    prompts = read(lambda: "\n".join(checked.lines(query["prompt"][:MAX_TEXT_CHARS], MAX_PROMPTS)))
    w = read(lambda: checked.w(query["w"])) if "w" in query else gr.skip()
    steps = read(lambda: checked.steps(query["steps"])) if "steps" in query else gr.skip()
    sampler = query["sampler"] if query.get("sampler") in SAMPLERS else gr.skip()
    seed = read(lambda: checked.number(query["seed"], "seed", *SEED_RANGE, integer=True)) if "seed" in query \
        else gr.skip()
    n = read(lambda: checked.number(query["n"], "images per prompt", 1, MAX_IMAGES_PER_PROMPT, integer=True)) \
        if "n" in query else gr.skip()
    negative = clean_line(query.get("negative", "").replace("\n", " "))[:MAX_TEXT_CHARS]
    return prompts, w, steps, sampler, seed, n, negative


def fill_from_link(request: gr.Request = None):
    """On page load: the Generate controls from the page URL's query (a share link); nothing for a plain URL."""
    return controls_from_query(getattr(request, "query_params", None) or {})


# The link as the browser shows it: this page's own address (wherever the app is served) with the query.
ABSOLUTE_LINK = """(query) => query && query.startsWith('?')
  ? window.location.origin + window.location.pathname + query : query"""
# "Copy link": onto the clipboard where the browser allows it (a secure page); the box shows it either way.
COPY_LINK = """(url) => { if (url) { try { navigator.clipboard.writeText(url); } catch (e) {} } return url; }"""
