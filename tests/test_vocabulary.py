"""The training captions' vocabulary (what the model can know) and how the token view marks the rest."""
from __future__ import annotations

import json

import pytest
from PIL import Image

from clipdiff import vocabulary as vocab
from clipdiff.vocabulary import Vocabulary


@pytest.fixture
def data_root(tmp_path):
    """A tiny copy of the shared data's layout: two captioned Oxford-102 rows and a flowers5 class of two images."""
    oxford = tmp_path / "oxford102"
    oxford.mkdir()
    rows = [{"image": "images/1.jpg", "class_name": "pink primrose", "captions": ["this flower has pink petals",
                                                                                  "petals, pink and round"]},
            {"image": "images/2.jpg", "class_name": "sunflower", "captions": ["a big yellow flower"]}]
    (oxford / "captions.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    tulips = tmp_path / "flowers5" / "images" / "tulip"
    tulips.mkdir(parents=True)
    for name in ("a.png", "b.png", "notes.txt"):
        (tulips / name).write_bytes(b"")
    return tmp_path


def test_the_training_texts_are_the_captions_and_every_image_s_species_captions(data_root):
    texts = list(vocab.training_texts(data_root))
    species = len(vocab.species_captions("x"))
    assert len(texts) == 3 + 2 * species + 2 * species, "3 captions, 2 Oxford images' and 2 tulips' species texts"
    assert texts[0] == "this flower has pink petals" and "a photo of a tulip, a type of flower." in texts


def test_words_are_counted_as_the_tokenizer_splits_them_and_load_back(data_root, tmp_path):
    v = Vocabulary.count(vocab.training_texts(data_root), "tiny")
    assert v.seen("petals") == 2 and v.seen("Petals") == 2 and v.seen("tulip") == 2 * len(vocab.species_captions("x"))
    assert "," not in v.counts, "punctuation is no word"
    assert v.rarity("petals") == "rare" and v.rarity("flower") is None, f"rare below {vocab.RARE_BELOW}"
    assert v.rarity("rosa") == "unknown" and v.rarity("!") is None and v.rarity("7") is None
    again = Vocabulary.load(v.save(tmp_path / "v.json"))
    assert again == v
    with pytest.raises(ValueError, match="not a clipdiff vocabulary"):
        (tmp_path / "x.json").write_text('{"words": {}}')
        Vocabulary.load(tmp_path / "x.json")


def test_the_shipped_vocabulary_knows_flowers_and_not_other_languages():
    v = Vocabulary.load()
    for word in ("red", "rose", "petals", "sunflower", "purple"):
        assert v.rarity(word) is None, word
    for word in ("una", "roja", "eine", "gelbe", "sonnenblume", "car", "玫瑰"):
        assert v.rarity(word) == "unknown", word
    assert v.rarity("elephant") == "rare"
    assert vocab.DEFAULT_VOCABULARY.stat().st_size < 300_000


def test_chips_are_the_model_s_tokens_and_characters_split_into_bytes_stay_one_chip(tiny_pipeline):
    encoder = tiny_pipeline.encoder
    tok = encoder.tokenizer
    line = "A deep red rose, eine Sonnenblume"
    assert [c.text for c in vocab.chips(tok, line, 75)] == encoder.tokenize(line).pieces[1:-1]
    chinese = vocab.chips(tok, "红色的玫瑰", 75)
    assert len(chinese) == 1 and chinese[0].text.startswith("红色的玫瑰 (") and "?" not in chinese[0].text
    assert chinese[0].tokens == encoder.tokenize("红色的玫瑰").count - 2
    assert sum(c.tokens for c in vocab.chips(tok, "rose " * 100, 75)) == 75, "only what the context keeps"


def test_the_token_view_marks_words_the_model_cannot_know(ctx):
    gr = pytest.importorskip("gradio")  # noqa: F841
    from clipdiff.app.tabs import generate

    pieces, summary = generate.show_tokens(ctx, "una rosa roja\nA purple elephant\nA deep red rose flower")
    marks = [(text.strip(), mark) for text, mark in pieces if mark in ("unknown", "rare")]
    assert marks == [("una", "unknown"), ("rosa", "unknown"), ("ro", "unknown"), ("ja", "unknown"),
                     ("elephant", "rare")], "every token of such a word"
    lines = summary.splitlines()
    assert lines[1].startswith("  - **Never in the training captions** (red): `una`, `rosa`, `roja`.")
    assert "**Rare** (amber, fewer than 10 times): `elephant` (3x)" in lines[3]
    assert lines[4].startswith("- Prompt 3:") and len(lines) == 5, "a prompt the model knows: no note"
