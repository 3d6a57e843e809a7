"""The [from:to:when] parser (clipdiff.prompts): what a prompt with a switch means, the brackets it refuses in words,
step counts as fractions of the run, and writing an edit back as text."""
from __future__ import annotations

import pytest

from clipdiff import prompts
from clipdiff.prompts import PromptEdit, PromptSyntaxError, edit_text, parse
from clipdiff.sampling import switch_step


@pytest.mark.parametrize("text, expected", [
    ("a red rose", PromptEdit("a red rose")),
    ("rose: red, velvety", PromptEdit("rose: red, velvety")),
    ("[a daisy:a sunflower:0.5]", PromptEdit("a daisy", "a sunflower", at=0.5)),
    ("a [white:yellow:.3] flower", PromptEdit("a white flower", "a yellow flower", at=0.3)),
    ("a rose [in the snow:4]", PromptEdit("a rose", "a rose in the snow", at_step=4)),
    ("a rose [in the snow::0.5]", PromptEdit("a rose in the snow", "a rose", at=0.5)),
    ("[a:b:1.0] and [c:d:1.0]", PromptEdit("a and c", "b and d", at=1.0)),
    ("[ a daisy : a sunflower : 0 ]", PromptEdit("a daisy", "a sunflower", at_step=0)),
])
def test_prompt_editing_syntax(text, expected):
    assert parse(text) == expected


@pytest.mark.parametrize("text, words", [
    ("a [red [dark:light:0.5] rose:tulip:0.5]", "brackets inside brackets"),
    ("a [red:rose:0.5", "a [ without its ]"),
    ("a red:rose:0.5]", "a ] without its ["),
    ("a [red] rose", "is not prompt editing"),
    ("[]", "is not prompt editing"),
    ("[a:b:c:0.5]", "3 colons"),
    ("[a:b:]", "says no when"),
    ("[a:b:1.5]", "between 0 and 1"),
    ("[a:b:-0.5]", "not '-0.5'"),
    ("[a:b:half]", "not 'half'"),
    ("[a:b:0.3] [c:d:0.5]", "one switch per prompt"),
    ("[:a rose:0.5]", "before the switch is empty"),
    ("[a rose::0.5]", "after the switch is empty"),
])
def test_brackets_that_do_not_parse_are_refused_in_words(text, words):
    with pytest.raises(PromptSyntaxError, match=words.replace("[", r"\[").replace("]", r"\]")):
        parse(text)


def test_a_step_count_is_a_fraction_of_the_run_and_past_the_end_never_switches():
    assert parse("[a:b:3]").fraction(12) == 0.25
    assert parse("[a:b:30]").fraction(12) == 1.0
    assert parse("[a:b:0.4]").fraction(12) == 0.4
    assert switch_step(parse("[a:b:5]").fraction(12), 12) == 5
    assert PromptEdit("a").fraction(12) == 1.0 and not PromptEdit("a").switches


def test_edit_text_round_trips_and_says_when_it_cannot():
    for f in (0.0, 0.5, 1.0, 1 / 3):
        text = edit_text("a daisy", "a sunflower", f)
        edit = parse(text)
        assert (edit.before, edit.after) == ("a daisy", "a sunflower") and abs(edit.at - f) < 1e-4
    assert edit_text("rose: red", "daisy", 0.5) is None and edit_text("a [b]", "c", 0.5) is None
    assert prompts.SYNTAX in str(pytest.raises(PromptSyntaxError, parse, "[x]").value)
