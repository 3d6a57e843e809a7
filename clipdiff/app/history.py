"""A browser session's runs: every Generate run is listed; the attendee pins the ones to keep and compare. Pinned runs
keep their images, settings and recorded steps (so any of them can be played back); the recorded steps of the
others go once the session's frames pass a memory budget, oldest first."""
from __future__ import annotations

import html
import time
from dataclasses import dataclass, field

import gradio as gr

from ..caveats import steps_of
from ..pipeline import Job
from .figures import thumbnail
from .inputs import shorten
from .limits import HISTORY_FRAME_BYTES, MAX_PINNED, MAX_RUNS
from .session import LastRun


STRIP = ", f = "        # what follows a switch strip's [from:to:f]: its fractions


@dataclass
class Entry:
    number: int                 # #1, #2, ... in the order the session made them
    run: LastRun
    when: str                   # the time it finished, HH:MM:SS
    pinned: bool = False

    @property
    def settings(self) -> dict:
        """What the run's images share (each image's own seed is in its caption)."""
        first = self.run.params[0] if self.run.params else {}
        return {k: first.get(k) for k in ("w", "steps", "sampler", "seed")}

    @property
    def prompts(self) -> list[str]:
        """The run's prompts as written, once each: a prompt switch as [from:to:when]; a strip of one switch at
        several fractions (the Debug tab's) as one [from:to:f] with its fractions, e.g. "[a:b:f], f = 0, 0.5, 1"."""
        fractions: dict[tuple[str, str | None], list[float]] = {}
        for p in self.run.params:
            key = (str(p.get("prompt", "")), None if p.get("switch_to") is None else str(p["switch_to"]))
            fractions.setdefault(key, []).append(float(p.get("switch_at", 1.0)))
        written = []
        for (prompt, switch_to), at in fractions.items():
            at = list(dict.fromkeys(at))
            if switch_to is None or len(at) == 1:
                written.append(Job(prompt, 0.0, 0, switch_to=switch_to, switch_at=at[0]).text)
            else:
                switch = Job(prompt, 0.0, 0, switch_to=switch_to, switch_at=0.5).text
                switch = switch[:-len("0.5]")] + "f]" if switch.endswith(":0.5]") else f"{prompt} -> {switch_to}"
                written.append(f"{switch}{STRIP}{', '.join(f'{f:g}' for f in at)}")
        return written

    @property
    def negatives(self) -> list[str]:
        """The negative prompts guidance pushed away from, once each ("" for images guided away from no prompt)."""
        return list(dict.fromkeys(str(p.get("negative_prompt", "")) for p in self.run.params))

    @property
    def seeds(self) -> str:
        """The run's seeds in words: one seed for every image (a strip, a single image) or one per image."""
        seeds = [p.get("seed") for p in self.run.params]
        if len(set(seeds)) <= 1:
            first = seeds[0] if seeds else None
            return f"{first} (every image)" if len(seeds) > 1 else str(first)
        if seeds == list(range(seeds[0], seeds[0] + len(seeds))):
            return f"{seeds[0]} (+1 per image)"
        return ", ".join(str(s) for s in seeds)

    @property
    def label(self) -> str:
        s, prompts, negatives = self.settings, self.prompts, [n for n in self.negatives if n]
        more = f" (+{len(prompts) - 1} more)" if len(prompts) > 1 else ""
        negative = f" | negative: {shorten(', '.join(negatives), 30)}" if negatives else ""
        switch, strip, fractions = (prompts[0] if prompts else "").partition(STRIP)   # a strip's fractions stay whole
        return (f"#{self.number} at {self.when}: {shorten(switch, 60)}{strip}{fractions}{more}{negative} | "
                f"w {s['w']:g} | {steps_of(s['steps'], s['sampler'])} | seed {self.seeds}")


@dataclass
class History:
    entries: list[Entry] = field(default_factory=list)
    made: int = 0

    def add(self, run) -> None:
        """A new run, listed last (a run already listed, e.g. one opened again for playback, is not listed twice)."""
        if not isinstance(run, LastRun) or any(e.run is run for e in self.entries):
            return
        self.made += 1
        self.entries.append(Entry(self.made, run, time.strftime("%H:%M:%S")))
        while len(self.entries) > MAX_RUNS:
            oldest = next((e for e in self.entries if not e.pinned), self.entries[0])
            self.entries.remove(oldest)
        self.keep_frames_within(HISTORY_FRAME_BYTES)

    def keep_frames_within(self, budget: int) -> None:
        """Drop recorded steps, unpinned runs' first and oldest first, until the session's frames fit the budget.
        The newest run keeps its steps whatever they weigh: the playback tab shows it."""
        total = sum(e.run.playback.nbytes for e in self.entries)
        for e in sorted(self.entries[:-1], key=lambda e: (e.pinned, e.number)):
            if total <= budget:
                break
            total -= e.run.playback.nbytes
            e.run.playback.release()

    def pin(self, numbers) -> None:
        """Pin exactly these runs (by number), at most MAX_PINNED of them, the newest kept when there are more."""
        wanted = {int(n) for n in numbers or [] if isinstance(n, (int, float, str)) and str(n).isdigit()}
        if len(wanted) > MAX_PINNED:
            wanted = set(sorted(wanted)[-MAX_PINNED:])
            gr.Warning(f"At most {MAX_PINNED} pinned runs: keeping the newest {MAX_PINNED}.")
        for e in self.entries:
            e.pinned = e.number in wanted

    @property
    def pinned(self) -> list[Entry]:
        return [e for e in self.entries if e.pinned]

    def find(self, number) -> Entry | None:
        return next((e for e in self.entries if e.number == number), None)


def release_history(history) -> None:
    """gr.State's delete callback: the session is gone; let every run's frames go."""
    if isinstance(history, History):
        for e in history.entries:
            e.run.playback.release()


def history_state(ttl_s: float) -> gr.State:
    return gr.State(None, time_to_live=ttl_s, delete_callback=release_history)


def side_by_side(entries: list[Entry]) -> str:
    """Runs as columns, side by side: each run's images, then its settings. Every piece of text is escaped."""
    columns = []
    for e in entries:
        s, run = e.settings, e.run
        images = "".join(f'<img src="{thumbnail(frame, None)}" alt="{html.escape(label)}" title="{html.escape(label)}, '
                         f'CLIP score {score:.1f}">' for frame, label, score in zip(run.frames, run.labels, run.scores))
        negatives = "<br>".join(html.escape(n) if n else "none (the learned null)" for n in e.negatives)
        rows = {"prompts": "<br>".join(html.escape(p) for p in e.prompts), "negative prompt": negatives,
                "w": f"{s['w']:g}", "steps": f"{s['steps']} ({html.escape(str(s['sampler']))})", "seed": e.seeds,
                "images": str(len(run.frames)), "best CLIP score": f"{max(run.scores):.1f}" if run.scores else "-",
                "playback": "recorded" if run.playback.records else "steps dropped (memory)"}
        settings = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in rows.items())
        columns.append(f'<div class="compare-run" id="compare-run-{e.number}"><h4>Run #{e.number} '
                       f"({e.when})</h4><div>{images}</div><dl>{settings}</dl></div>")
    return f'<div class="compare-runs">{"".join(columns)}</div>'
