"""Prompt editing as people already write it (Stable Diffusion web UI's `[from:to:when]`): one prompt for the first
part of the steps, another after. Parsing only; the sampler's condition switch is sampling.Switch.

    "[a daisy:a sunflower:0.5]"            a daisy for the first half of the steps, then a sunflower
    "a [white:yellow:0.3] flower"          "a white flower", then "a yellow flower" from 30% of the steps on
    "a rose [in the snow:4]"               "a rose", then "a rose in the snow" from step 4 on (an integer: a step)
    "a rose [in the snow::0.5]"            "a rose in the snow", then "a rose"

`when` with a decimal point is a fraction of the steps (0 to 1); a whole number is a step count, as in the web UI.
Several edits in one prompt must share their `when` (one switch per prompt). Square brackets mean prompt editing
and nothing else: anything that does not parse is refused in words (PromptSyntaxError), never guessed at.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

WHEN_FRACTION = re.compile(r"^\d*\.\d+$|^\d+\.\d*$")
WHEN_STEP = re.compile(r"^\d+$")
SYNTAX = "[from:to:when], e.g. [a daisy:a sunflower:0.5]"


class PromptSyntaxError(ValueError):
    """A prompt whose square brackets are not prompt editing; the message says what is wrong and how to write it,
    `prompt` which prompt it is."""
    prompt: str = ""


@dataclass(frozen=True)
class PromptEdit:
    """A prompt box's line: `before` alone, or `before` switching to `after` at a fraction or a step."""
    before: str
    after: str | None = None          # None: a plain prompt, no switch
    at: float | None = None           # the switch as a fraction of the steps, 0..1
    at_step: int | None = None        # ... or as a step count (the web UI's integer form)

    @property
    def switches(self) -> bool:
        return self.after is not None

    def fraction(self, steps: int) -> float:
        """The switch as a fraction of `steps`; a step count past the last step never switches (as in the web UI)."""
        if self.at is not None:
            return self.at
        return min(self.at_step, steps) / steps if self.at_step is not None else 1.0


def parse(text: str) -> PromptEdit:
    """A prompt, with its `[from:to:when]` edits if it has any."""
    try:
        return _parse(text)
    except PromptSyntaxError as e:
        e.prompt = text
        raise


def _parse(text: str) -> PromptEdit:
    if "[" not in text and "]" not in text:
        return PromptEdit(text)
    pieces = re.split(r"(\[[^\[\]]*\])", text)
    before, after, whens = [], [], set()
    for piece in pieces:
        if piece.startswith("[") and piece.endswith("]"):
            old, new, when = _group(piece)
            before.append(old)
            after.append(new)
            whens.add(when)
        elif "[" in piece or "]" in piece:
            raise PromptSyntaxError(_bracket_problem(text))
        else:
            before.append(piece)
            after.append(piece)
    if len(whens) > 1:
        shown = ", ".join(sorted(w for w in whens))
        raise PromptSyntaxError(f"one switch per prompt: every [from:to:when] needs the same when, not {shown}")
    first, second = _words(before), _words(after)
    if not first or not second:
        side = "before" if not first else "after"
        raise PromptSyntaxError(f"the prompt {side} the switch is empty; write {SYNTAX}")
    when = whens.pop()
    if WHEN_STEP.match(when):
        return PromptEdit(first, second, at_step=int(when))
    return PromptEdit(first, second, at=float(when))


def _group(piece: str) -> tuple[str, str, str]:
    """One `[...]` group -> (text before the switch, text after it, when as written)."""
    parts = piece[1:-1].split(":")
    if len(parts) == 1:
        raise PromptSyntaxError(f"{piece} is not prompt editing (square brackets are only for that); write {SYNTAX}")
    if len(parts) > 3:
        raise PromptSyntaxError(f"{piece} has {len(parts) - 1} colons; write {SYNTAX}")
    old, new, when = parts if len(parts) == 3 else ("", *parts)
    when = when.strip()
    if not when:
        raise PromptSyntaxError(f"{piece} says no when: the last part is a fraction of the steps (0 to 1, e.g. 0.5) "
                                "or a step count (e.g. 4)")
    if WHEN_FRACTION.match(when):
        if float(when) > 1:
            raise PromptSyntaxError(f"{piece}: a fraction of the steps is between 0 and 1, not {when} (a whole "
                                    "number is a step count)")
    elif not WHEN_STEP.match(when):
        raise PromptSyntaxError(f"{piece}: when must be a fraction of the steps (0 to 1, e.g. 0.5) or a step count "
                                f"(e.g. 4), not {when!r}")
    return old, new, when


def _bracket_problem(text: str) -> str:
    depth = 0
    for ch in text:
        if ch == "[":
            depth += 1
            if depth > 1:
                return f"brackets inside brackets cannot be read; write one level: {SYNTAX}"
        elif ch == "]":
            depth -= 1
            if depth < 0:
                return f"a ] without its [; write {SYNTAX}"
    return f"a [ without its ]; write {SYNTAX}"


def _words(parts: list[str]) -> str:
    return " ".join("".join(parts).split())


def edit_text(a: str, b: str, fraction: float) -> str | None:
    """The `[a:b:fraction]` that parses back to this switch, or None when a or b holds characters that cannot be
    written in one (brackets, colons)."""
    when = f"{round(fraction, 4):.4f}".rstrip("0")
    text = f"[{a}:{b}:{when}0]" if when.endswith(".") else f"[{a}:{b}:{when}]"
    try:
        edit = parse(text)
    except PromptSyntaxError:
        return None
    return text if (edit.before, edit.after) == (" ".join(a.split()), " ".join(b.split())) else None
