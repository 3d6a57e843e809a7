"""The app's plotly figures: the playback's cosine and noise curves, the similarity heatmaps, the embedding map."""
from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..atlas import Atlas
from ..playback import PlaybackRun


def playback_figure(run: PlaybackRun, sample: int, step: int | None = None) -> go.Figure:
    """The run's cosine and noise curves over the timesteps; step (0-based): the recorded step shown now, marked."""
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.12, subplot_titles=(
        "when does it commit to the prompt?<br>cosine(condition, CLIP embedding of the guided x0)",
        "noise prediction RMS"))
    t = run.timesteps
    for i, label in enumerate(run.labels):
        if run.cosines is not None and len(run.cosines):
            fig.add_trace(go.Scatter(x=t, y=run.cosines[:, i], mode="lines+markers", name=label,
                                     line={"width": 3 if i == sample else 1}, opacity=1 if i == sample else 0.35,
                                     legendgroup="cos"), row=1, col=1)
    for name, series in run.noise_norms(sample).items():
        fig.add_trace(go.Scatter(x=t, y=series, mode="lines", name=f"eps {name}", legendgroup="eps"), row=2, col=1)
    fig.update_xaxes(autorange="reversed", title_text="timestep t (sampling runs left to right)", row=2, col=1)
    if step is not None and 0 <= step < len(t):
        fig.add_vline(x=t[step], line={"color": "black", "width": 1, "dash": "dot"}, row="all", col=1)
    fig.update_layout(height=560, margin={"l": 40, "r": 10, "t": 50, "b": 40},
                      legend={"font": {"size": 10}, "orientation": "h", "y": -0.15})
    return fig


def similarity_figure(texts: list[str], images: list[str], cosines, probs, softmax_over: str) -> go.Figure:
    fig = make_subplots(rows=1, cols=2, shared_yaxes=True, horizontal_spacing=0.04, subplot_titles=(
        "raw cosine", f"softmax over {softmax_over} (x logit scale)"))
    short = [t if len(t) <= 40 else t[:37] + "..." for t in texts]
    for col, (z, scale) in enumerate(((cosines, "RdBu"), (probs, "Viridis")), start=1):
        fig.add_trace(go.Heatmap(z=z, x=images, y=short, colorscale=scale, texttemplate="%{z:.2f}",
                                 showscale=False, zmid=0 if col == 1 else None), row=1, col=col)
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(height=max(300, 60 + 45 * len(texts)), margin={"l": 10, "r": 10, "t": 40, "b": 40})
    return fig


def map_figure(atlas: Atlas, method: str, show_texts: bool, live: list[dict]) -> go.Figure:
    coords = atlas.coords(method)
    xy = coords["images"]
    species = [atlas.class_names[i] for i in atlas.labels]
    fig = go.Figure()
    fig.add_trace(go.Scattergl(x=xy[:, 0], y=xy[:, 1], mode="markers", name="dataset images",
                               marker={"size": 4, "color": atlas.labels, "colorscale": "Turbo", "opacity": 0.6},
                               hovertext=species, hoverinfo="text"))
    if show_texts and len(atlas.texts):
        txy = coords["texts"]
        fig.add_trace(go.Scattergl(x=txy[:, 0], y=txy[:, 1], mode="markers", name="texts (species, captions)",
                                   marker={"size": 5, "symbol": "x", "color": "rgba(90,90,90,0.5)"},
                                   hovertext=atlas.texts, hoverinfo="text"))
    for modality, symbol in (("text", "star"), ("image", "diamond")):
        points = [p for p in live if p["modality"] == modality]
        if points:
            fig.add_trace(go.Scatter(
                x=[p["x"] for p in points], y=[p["y"] for p in points], mode="markers+text",
                name=f"your {modality}s", text=[p["label"][:30] for p in points], textposition="top center",
                hovertext=[p["label"] for p in points], hoverinfo="text",
                marker={"size": 16, "symbol": symbol, "color": "black" if modality == "text" else "crimson",
                        "line": {"width": 1, "color": "white"}}))
    fig.update_layout(height=620, margin={"l": 10, "r": 10, "t": 30, "b": 10},
                      title=f"{method}: hover for labels; colours are species")
    return fig
