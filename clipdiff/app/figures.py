"""The app's plotly figures: the playback's cosine and noise curves, the similarity heatmaps, the embedding map."""
from __future__ import annotations

import base64
import io

import numpy as np
import plotly.graph_objects as go
from PIL import Image, ImageOps
from plotly.subplots import make_subplots

from ..atlas import Atlas
from ..images import to_pil
from ..playback import PlaybackRun
from .inputs import shorten


def playback_figure(run: PlaybackRun, sample: int, step: int | None = None) -> go.Figure:
    """The run's cosine curves over the timesteps, and the selected image's heat maps averaged over its pixels (how
    much the prompt changes the noise prediction: the three predictions' own sizes overlap and hide that); step
    (0-based): the recorded step shown now, marked."""
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.12, subplot_titles=(
        "when does it commit to the prompt?<br>cosine(condition, CLIP embedding of the guided x0)",
        "where guidance acts, averaged over the pixels<br>(the heat maps beside the frames)"))
    t = run.timesteps
    for i, label in enumerate(run.labels):
        if run.cosines is not None and len(run.cosines):
            fig.add_trace(go.Scatter(x=t, y=run.cosines[:, i], mode="lines+markers", name=label,
                                     line={"width": 3 if i == sample else 1}, opacity=1 if i == sample else 0.35,
                                     legendgroup="cos"), row=1, col=1)
    one = len(t) == 1              # a one-step run: a line needs two points, so its one point gets a marker
    for name, series in run.guidance_means(sample).items():
        fig.add_trace(go.Scatter(x=t, y=series, mode="lines+markers" if one else "lines", name=f"mean {name}",
                                 legendgroup="eps"), row=2, col=1)
    add_prompt_debugging(fig, run, sample)
    fig.update_xaxes(autorange="reversed", title_text="timestep t (sampling runs left to right)", row=2, col=1)
    if one:   # plotly's autorange around one point is +-1.5 (400 .. 398.5): show the whole way down to t = 0
        pad = 0.05 * (t[0] + 1)
        fig.update_xaxes(autorange=False, range=[t[0] + pad, -pad])
    if step is not None and 0 <= step < len(t):
        fig.add_vline(x=t[step], line={"color": "black", "width": 1, "dash": "dot"}, row="all", col=1)
    fig.update_layout(height=560, margin={"l": 40, "r": 10, "t": 50, "b": 40},
                      legend={"font": {"size": 10}, "orientation": "h", "y": -0.15})
    return fig


def add_prompt_debugging(fig: go.Figure, run: PlaybackRun, sample: int) -> None:
    """The selected image's cosines to its negative prompt (or to the first prompt of a switch), dashed, and the
    step where its prompt switched, a dotted line across both plots."""
    for name, cosines in run.extra_cosines.items():
        if len(cosines) and not np.isnan(cosines[:, sample]).all():
            fig.add_trace(go.Scatter(x=run.timesteps, y=cosines[:, sample], mode="lines", name=f"cosine to the {name}",
                                     line={"dash": "dash", "width": 2}, legendgroup="cos"), row=1, col=1)
    switch = run.switch_timestep(sample)
    if switch is not None:
        fig.add_vline(x=switch, line={"dash": "dot", "color": "black"}, row="all", col=1)
        fig.add_annotation(x=switch, y=1, yref="y domain", text="switch to the second prompt", showarrow=False,
                           xanchor="left", font={"size": 10}, row=1, col=1)



def schedule_figure(alpha_bar: np.ndarray, snr: np.ndarray, t: int) -> go.Figure:
    """a_bar_t (how much of the photo is left, in amplitude its square root) and the signal-to-noise ratio over the
    timesteps, log scale, with the chosen t marked."""
    ts = np.arange(len(alpha_bar))
    fig = make_subplots(rows=1, cols=2, subplot_titles=("how much photo is left: sqrt(a_bar_t) and sqrt(1 - a_bar_t)",
                                                        "signal-to-noise ratio a_bar_t / (1 - a_bar_t)"))
    fig.add_trace(go.Scatter(x=ts, y=np.sqrt(alpha_bar), name="sqrt(a_bar_t): the photo's weight"), row=1, col=1)
    fig.add_trace(go.Scatter(x=ts, y=np.sqrt(1 - alpha_bar), name="sqrt(1 - a_bar_t): the noise's weight"),
                  row=1, col=1)
    fig.add_trace(go.Scatter(x=ts, y=snr, name="SNR"), row=1, col=2)
    fig.add_trace(go.Scatter(x=[t, t, t], y=[np.sqrt(alpha_bar[t]), np.sqrt(1 - alpha_bar[t]), None], mode="markers",
                             marker={"size": 10, "color": "black"}, name=f"t = {t}", showlegend=False), row=1, col=1)
    fig.add_trace(go.Scatter(x=[t], y=[snr[t]], mode="markers", marker={"size": 10, "color": "black"},
                             name=f"t = {t}"), row=1, col=2)
    fig.update_yaxes(type="log", row=1, col=2)
    fig.update_xaxes(title_text="timestep t")
    fig.update_layout(height=320, margin={"l": 40, "r": 10, "t": 40, "b": 40},
                      legend={"font": {"size": 10}, "orientation": "h", "y": -0.3})
    return fig


def thumbnail(image, size: int | None = 48) -> str:
    """A picture (PIL, or a uint8 (H, W, 3) array) as a small PNG data: URI, square, at most `size` pixels a side
    (None: as it is). Small enough to ride inside a figure or a page."""
    im = image if isinstance(image, Image.Image) else to_pil(np.asarray(image))
    if size is not None and (im.width > size or im.height > size or im.width != im.height):
        im = ImageOps.fit(im.convert("RGB"), (size, size), Image.Resampling.BOX)
    buffer = io.BytesIO()
    im.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


THUMB_PX = 44          # the heatmap's thumbnails under its columns


def similarity_figure(texts: list[str], images: list[str], cosines, probs, softmax_over: str,
                      thumbnails: list[str] | None = None) -> go.Figure:
    """Texts x images heatmaps. thumbnails (data: URIs, one per image): drawn under each column, and shown beside
    the pointer on hover (clipdiff/app/page.py), so every column says which picture it is."""
    fig = make_subplots(rows=1, cols=2, shared_yaxes=True, horizontal_spacing=0.04, subplot_titles=(
        "raw cosine", f"softmax over {softmax_over} (x logit scale)"))
    short = [shorten(t, 40) for t in texts]
    for col, (z, scale) in enumerate(((cosines, "RdBu"), (probs, "Viridis")), start=1):
        fig.add_trace(go.Heatmap(z=z, x=images, y=short, colorscale=scale, texttemplate="%{z:.2f}",
                                 showscale=False, zmid=0 if col == 1 else None,
                                 hovertemplate="%{y}<br>%{x}<br>%{z:.3f}<extra></extra>"), row=1, col=col)
    fig.update_yaxes(autorange="reversed")
    labels_px = 12 + 4 * min(max((len(n) for n in images), default=0), 44)    # the angled column labels
    height = max(300, 60 + 45 * len(texts)) + (THUMB_PX + labels_px if thumbnails else 0)
    bottom = 40 + (THUMB_PX + labels_px if thumbnails else 0)
    fig.update_layout(height=height, margin={"l": 10, "r": 10, "t": 40, "b": bottom})
    if thumbnails:
        plot_px = height - 40 - bottom
        for axis in ("x", "x2"):
            for k, uri in enumerate(thumbnails):
                fig.add_layout_image(source=uri, xref=axis, yref="paper", x=k, y=-0.01, sizex=0.95,
                                     sizey=THUMB_PX / plot_px, xanchor="center", yanchor="top", sizing="contain",
                                     layer="above")
        fig.update_xaxes(tickangle=-35, ticklabelstandoff=THUMB_PX + 6, tickfont={"size": 10})
        fig.update_layout(meta={"thumbnails": dict(zip(images, thumbnails))})
    return fig


def label_positions(points: list[tuple[float, float]], near: float) -> list[str]:
    """Where each point's text goes, so that labels of points closer than `near` to each other go different ways:
    each point takes the first side its near neighbours have not taken yet."""
    sides = ["top center", "bottom center", "middle right", "middle left", "top right", "bottom left", "top left",
             "bottom right"]
    chosen: list[str] = []
    for i, (x, y) in enumerate(points):
        taken = {chosen[j] for j, (u, v) in enumerate(points[:i]) if abs(u - x) < near and abs(v - y) < near}
        chosen.append(next((side for side in sides if side not in taken), sides[i % len(sides)]))
    return chosen


def map_figure(atlas: Atlas, method: str, show_texts: bool, live: list[dict]) -> go.Figure:
    """The atlas, and the live points (dicts with label, modality, x, y, and for images a thumbnail): their text is
    short and placed apart where they crowd; the hover gives the whole label and the picture."""
    coords = atlas.coords(method)
    xy = coords["images"]
    species = [atlas.class_names[i] for i in atlas.labels]
    fig = go.Figure()
    # Hover targets for the live points, first and point-sized: plotly's hover prefers the smallest marker under the
    # pointer and, between equals, the earlier trace, so without them a run's image placed inside a dense island of
    # dataset points would show a dataset label instead of its own.
    if live:
        fig.add_trace(go.Scatter(x=[p["x"] for p in live], y=[p["y"] for p in live], mode="markers",
                                 name="hover targets", showlegend=False, marker={"size": 1, "color": "rgba(0,0,0,0)"},
                                 customdata=[p["label"] for p in live], hovertext=[p["label"] for p in live],
                                 hoverinfo="text", hoverlabel={"bgcolor": [
                                     "black" if p["modality"] == "text" else "crimson" for p in live]}))
    fig.add_trace(go.Scattergl(x=xy[:, 0], y=xy[:, 1], mode="markers", name="dataset images",
                               marker={"size": 4, "color": atlas.labels, "colorscale": "Turbo", "opacity": 0.6},
                               hovertext=species, hoverinfo="text"))
    if show_texts and len(atlas.texts):
        txy = coords["texts"]
        fig.add_trace(go.Scattergl(x=txy[:, 0], y=txy[:, 1], mode="markers", name="texts (species, captions)",
                                   marker={"size": 5, "symbol": "x", "color": "rgba(90,90,90,0.5)"},
                                   hovertext=atlas.texts, hoverinfo="text"))
    near = 0.08 * float(max(np.ptp(xy[:, 0]), np.ptp(xy[:, 1]), 1e-6)) if len(xy) else 1.0
    sides = label_positions([(p["x"], p["y"]) for p in live], near)
    for modality, symbol in (("text", "star"), ("image", "diamond")):
        points = [(p, side) for p, side in zip(live, sides) if p["modality"] == modality]
        if points:
            # WebGL like the atlas: plotly draws WebGL traces above SVG ones, and the atlas would hide SVG markers
            fig.add_trace(go.Scattergl(
                x=[p["x"] for p, _ in points], y=[p["y"] for p, _ in points], mode="markers+text",
                name=f"your {modality}s", text=[p.get("short", shorten(p["label"], 24)) for p, _ in points],
                textposition=[side for _, side in points], hoverinfo="skip", textfont={"size": 11},
                marker={"size": 14, "symbol": symbol, "color": "black" if modality == "text" else "crimson",
                        "line": {"width": 1, "color": "white"}}))
    thumbnails = {p["label"]: p["thumbnail"] for p in live if p.get("thumbnail")}
    fig.update_layout(height=620, margin={"l": 10, "r": 10, "t": 30, "b": 10},
                      title=f"{method}: hover for labels{' (and your images, for their pictures)' if thumbnails else ''}; "
                            "colours are species",
                      meta={"thumbnails": thumbnails} if thumbnails else None)
    return fig
