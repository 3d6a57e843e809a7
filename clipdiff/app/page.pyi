"""The page's own CSS and JavaScript: what Gradio's components do not do by themselves. Kept here, as text, so the
tabs stay plain Python; serve() hands them to launch().

- Ctrl+Enter (Cmd+Enter) in a text box clicks its tab's main button: the first primary button after the box.
- A plotly figure drawn while its tab was hidden gets plotly's default 700 px width; a ResizeObserver redraws it to
  its container's width when the tab is shown.
- Figures that carry thumbnails (layout.meta.thumbnails: label -> picture) show the hovered image's thumbnail
  beside the pointer: plotly's own hover labels take text only.
- Gradio's empty-value boxes get the role their aria-label needs.
- THEME: Gradio's default theme with text and buttons dark enough to read (WCAG AA, 4.5:1, which an axe-core audit
  checks in tests/test_accessibility.py): its light-grey info texts and white-on-orange buttons fall short.
"""
from __future__ import annotations

import gradio as gr


from gradio.events import Dependency

class DescribedImage(gr.Image):
    """gr.Image whose picture carries alt text: Gradio's image view reads an `alt_text` prop that gr.Image does not
    take (gradio 6.31), so a screen reader would hear nothing of a strip or a grid. A handler that returns
    DescribedImage(picture, alt_text=...) updates both."""
    is_template = True        # the page draws it with gr.Image's own view

    def __init__(self, value=None, *, alt_text: str | None = None, **kwargs):
        self.alt_text = alt_text
        super().__init__(value, **kwargs)

    def get_config(self, cls=None) -> dict:
        return {**super().get_config(gr.Image), "alt_text": self.alt_text}
    from typing import Callable, Literal, Sequence, Any, TYPE_CHECKING
    from gradio.blocks import Block
    if TYPE_CHECKING:
        from gradio.components import Timer
        from gradio.components.base import Component


THEME = gr.themes.Default().set(
    body_text_color_subdued="*neutral_600",            # info texts, slider bounds, the footer: 7.7:1 on white
    input_placeholder_color="*neutral_500",
    color_accent="*primary_700",                        # the selected tab's name
    button_primary_background_fill="*primary_700",      # white on orange-700: 5.2:1 (orange-500: 2.8:1)
    button_primary_background_fill_hover="*primary_800",
    button_cancel_background_fill="#b91c1c",            # white on red-700: 6.5:1 (red-500: 3.8:1)
    button_cancel_background_fill_hover="#991b1b",
)

CSS = """
.pixelated img, .pixelated canvas, img.pixelated { image-rendering: pixelated; }
/* results: whole images at a whole multiple of 32 px, caption under the picture, never cropped */
.results .grid-wrap.fixed-height { min-height: 0 !important; }
.results .grid-container { grid-template-columns: repeat(auto-fill, minmax(136px, 1fr)) !important;
  padding-top: 30px !important; }
.results .thumbnail-item { aspect-ratio: auto !important; height: auto !important; }
.results .thumbnail-item img { object-fit: contain !important; width: 128px; height: 128px; margin: auto; }
.results .thumbnail-item .caption-label { position: static !important; max-width: none !important;
  white-space: normal !important; font-size: 11px; line-height: 1.25; opacity: 1 !important;
  color: var(--body-text-color) !important; }
/* a lone item (a preview while sampling or after Stop: one picture of every image) at its own size, at least the
   results' 128 px, at most the column's width */
.results .grid-container:has(> :only-child > .thumbnail-item) { grid-template-columns: minmax(136px, max-content)
  !important; }
.results .grid-container > :only-child > .thumbnail-item img { width: auto; height: auto; min-width: 128px;
  max-width: 100%; }
/* the playback's GIF box only once there is a GIF (or one is being made) */
#pb-gif:not(:has(.file-preview)):not(:has(.generating)):not(:has(.pending)) { display: none !important; }
#clipdiff-thumb { position: fixed; z-index: 1000; pointer-events: none; width: 128px; height: 128px;
  image-rendering: pixelated; border: 2px solid #333; background: white; display: none; }
/* the tour's note stays in view while the attendee scrolls to the result it explains (Gradio's container clips
   overflow with overflow: hidden, which would make it the note's scroll box: clip does the same without that) */
.gradio-container { overflow: clip !important; }
#tour-note { border: 2px solid var(--color-accent); border-radius: 8px; padding: 4px 12px; position: sticky;
  top: 0; z-index: 50; background: var(--background-fill-primary); max-height: 40vh; overflow-y: auto; }
.compare-runs { display: flex; gap: 12px; align-items: flex-start; overflow-x: auto; }
.compare-run { flex: 1 1 0; min-width: 220px; border: 1px solid var(--border-color-primary); border-radius: 8px;
  padding: 8px; }
.compare-run img { image-rendering: pixelated; width: 96px; height: 96px; margin: 2px; display: inline-block; }
.compare-run dl { display: grid; grid-template-columns: auto 1fr; gap: 0 8px; font-size: 13px; margin: 4px 0; }
.compare-run dt { font-weight: 600; }
"""

def scroll_to(selector: str) -> str:
    """JavaScript for an event's js=: bring the element (a tab's result) into view, below the tour's note when that
    is shown, unless it is in view already. It waits for the element: a tab's contents appear once it is shown."""
    return """() => { const go = (tries) => { const el = document.querySelector('%s');
    if (!el || el.offsetParent === null) { if (tries > 0) setTimeout(() => go(tries - 1), 100); return; }
    const note = document.getElementById('tour-note');
    const top = note && note.offsetParent !== null ? Math.max(0, note.getBoundingClientRect().bottom) : 0;
    const r = el.getBoundingClientRect();
    if (r.top >= top && r.top < window.innerHeight - 200) return;
    window.scrollBy({top: r.top - top - 8, behavior: 'instant'}); }; go(30); }""" % selector


SHOW_RESULTS = scroll_to("#results")


JS = """() => {
  document.addEventListener('keydown', (e) => {
    if (e.key !== 'Enter' || !(e.ctrlKey || e.metaKey)) return;
    const box = e.target.closest && e.target.closest('textarea, input[type=text]');
    const panel = box && box.closest('[role=tabpanel]');
    if (!panel) return;
    const buttons = [...panel.querySelectorAll('button.primary')].filter(b => b.offsetParent !== null);
    const next = buttons.find(b => box.compareDocumentPosition(b) & Node.DOCUMENT_POSITION_FOLLOWING);
    const target = next || buttons[0];
    if (target) { e.preventDefault(); box.dispatchEvent(new Event('input', {bubbles: true})); target.click(); }
  });

  const tip = document.createElement('img');
  tip.id = 'clipdiff-thumb';
  document.body.appendChild(tip);
  const hide = () => { tip.style.display = 'none'; };
  // The thumbnail never covers plotly's hover label nor the pointer: above the two of them, or below where the
  // window's top (or the plot's, near the top edge) leaves no room, or beside them where neither fits.
  const place = (gd, x, y) => {
    const size = 132, gap = 8;
    let left = x, right = x, top = y, bottom = y;
    gd.querySelectorAll('.hoverlayer .hovertext').forEach((label) => {
      const r = label.getBoundingClientRect();
      left = Math.min(left, r.left); right = Math.max(right, r.right);
      top = Math.min(top, r.top); bottom = Math.max(bottom, r.bottom);
    });
    const clampX = (v) => Math.max(4, Math.min(v, window.innerWidth - size - 4));
    let tx = clampX(x - size / 2), ty;
    if (top - gap - size >= 4) ty = top - gap - size;
    else if (bottom + gap + size <= window.innerHeight - 4) ty = bottom + gap;
    else {
      ty = Math.max(4, Math.min(y - size / 2, window.innerHeight - size - 4));
      tx = right + gap + size <= window.innerWidth - 4 ? right + gap : Math.max(4, left - gap - size);
    }
    tip.style.left = tx + 'px';
    tip.style.top = ty + 'px';
  };
  const show = (gd, ev) => {
    const thumbs = gd.layout && gd.layout.meta && gd.layout.meta.thumbnails;
    const pt = ev.points && ev.points[0];
    const src = thumbs && pt && (thumbs[pt.customdata] || thumbs[pt.x]);
    if (!src) return hide();
    tip.src = src;
    tip.style.display = 'block';
    place(gd, ev.event.clientX, ev.event.clientY);
    requestAnimationFrame(() => place(gd, ev.event.clientX, ev.event.clientY));   // once plotly's label is drawn
  };
  const seen = new WeakSet();
  const watch = () => document.querySelectorAll('.js-plotly-plot').forEach((gd) => {
    if (seen.has(gd) || !gd.on) return;
    seen.add(gd);
    let width = gd.clientWidth;
    new ResizeObserver(() => {
      const w = gd.clientWidth;
      if (w > 0 && w !== width && window.Plotly) { width = w; window.Plotly.Plots.resize(gd); }
    }).observe(gd);
    gd.on('plotly_hover', (ev) => show(gd, ev));
    gd.on('plotly_unhover', hide);
  });
  // Gradio's empty-value box carries an aria-label but no role, which ARIA forbids on a plain div: it is an icon
  const name = () => document.querySelectorAll('div.empty[aria-label]:not([role])')
    .forEach((box) => box.setAttribute('role', 'img'));
  new MutationObserver(() => { watch(); name(); }).observe(document.body, {childList: true, subtree: true});
  name();
}"""