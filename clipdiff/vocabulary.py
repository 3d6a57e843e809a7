"""What the model can know: the words of the training captions and how often each occurs.

CLIP's tokenizer cuts any text into pieces it has ids for, so a word the training captions never used ("una",
"roja", "Sonnenblume", 玫瑰) still becomes tokens, and the model still draws *something*: whatever its embedding
lands near, usually the same picture for every such prompt. The token view marks those words, so an attendee sees
what the model cannot know. Words are counted the way the tokenizer splits and cleans text (lower case, its own
word pattern), over the texts the models were trained on: every Oxford-102 caption, and the species-name captions
(`data.species_captions`) of every training image, as `data.ImageSet.captions_for` gives them.

    python -m clipdiff vocabulary                      # ../shared/data -> checkpoints/vocabulary.json
    python -m clipdiff vocabulary --data DIR --out FILE
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from .checkpoints import CHECKPOINTS_DIR
from .data import IMAGE_SUFFIXES, default_data_root, species_captions

DEFAULT_VOCABULARY = CHECKPOINTS_DIR / "vocabulary.json"
FORMAT = "clipdiff-vocabulary-1"
RARE_BELOW = 10          # a word seen fewer times than this in the training texts is rare: the model barely knows it


def tokenizer():
    """The CLIP BPE tokenizer every clipdiff CLIP uses (open_clip's SimpleTokenizer): its cleaning and word split."""
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer()


def words(text: str, tok=None) -> list[str]:
    """The words of a text as CLIP's tokenizer splits them before cutting them into pieces: cleaned, lower case;
    punctuation and digits come out as words of their own."""
    import regex

    tok = tok or tokenizer()
    return regex.findall(tok.pat, tok.clean_fn(text))


def is_word(word: str) -> bool:
    """Rarity is told for words with letters; punctuation and single digits are not words a caption 'knows'."""
    return any(ch.isalpha() for ch in word)


# -- the training texts ---------------------------------------------------------------------------------------
def captions_jsonl_texts(path: Path) -> Iterator[str]:
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            yield from row.get("captions", [])
            yield from species_captions(row["class_name"])


def folder_tree_texts(root: Path) -> Iterator[str]:
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir()) or [root]
    for d in class_dirs:
        images = sum(1 for f in d.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
        for _ in range(images):
            yield from species_captions(d.name.replace("_", " "))


def training_texts(path: str | Path | None = None) -> Iterator[str]:
    """Every text the models were trained on, once per use: what data.load_training_data(path) captions, read
    without decoding a single image."""
    root = Path(path) if path else default_data_root()
    parts = [root / "oxford102", root / "flowers5"] if (root / "oxford102").is_dir() else [root]
    for part in parts:
        if part.is_file():
            yield from captions_jsonl_texts(part)
        elif (part / "captions.jsonl").is_file():
            yield from captions_jsonl_texts(part / "captions.jsonl")
        elif (part / "images").is_dir():
            yield from folder_tree_texts(part / "images")
        elif part.is_dir():
            yield from folder_tree_texts(part)


# -- the vocabulary -------------------------------------------------------------------------------------------
@dataclass
class Vocabulary:
    counts: dict[str, int]      # word -> how many times the training texts use it
    texts: int                  # how many training texts were counted
    source: str = ""

    @classmethod
    def count(cls, texts: Iterable[str], source: str = "") -> "Vocabulary":
        tok, counts, n = tokenizer(), Counter(), 0
        for text in texts:
            counts.update(w for w in words(text, tok) if is_word(w))
            n += 1
        return cls(dict(counts.most_common()), n, source)

    def seen(self, word: str) -> int:
        return self.counts.get(word.lower(), 0)

    def rarity(self, word: str) -> str | None:
        """"unknown" (never in the training texts), "rare" (fewer than RARE_BELOW times), or None."""
        if not is_word(word):
            return None
        n = self.seen(word)
        return "unknown" if n == 0 else "rare" if n < RARE_BELOW else None

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        body = {"format": FORMAT, "source": self.source, "texts": self.texts, "rare_below": RARE_BELOW,
                "words": self.counts}
        path.write_text(json.dumps(body, ensure_ascii=False, separators=(",", ":")) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path = DEFAULT_VOCABULARY) -> "Vocabulary":
        body = json.loads(Path(path).read_text(encoding="utf-8"))
        if body.get("format") != FORMAT:
            raise ValueError(f"{path} is not a clipdiff vocabulary ({FORMAT})")
        return cls({str(k): int(v) for k, v in body["words"].items()}, int(body["texts"]), body.get("source", ""))


# -- what the token view shows --------------------------------------------------------------------------------
@dataclass
class Chip:
    text: str                  # what the chip shows
    word: str                  # the word it is (a piece of)
    tokens: int                # how many tokens it stands for


def chips(tok, text: str, max_tokens: int) -> list[Chip]:
    """The tokens the model reads of `text` (at most max_tokens), as chips: one per BPE piece, but a word whose
    pieces are bytes of a character that decode only together (Chinese, emoji) is one chip of its whole word with
    its token count, instead of several "?" chips."""
    out, used = [], 0
    for word in words(text, tok):
        pieces = tok.bpe("".join(tok.byte_encoder[b] for b in word.encode("utf-8"))).split(" ")
        pieces = pieces[:max_tokens - used]
        if not pieces:
            break
        used += len(pieces)
        shown = [bytearray(tok.byte_decoder[c] for c in p.replace("</w>", "")).decode("utf-8", errors="replace")
                 for p in pieces]
        if any("\ufffd" in s for s in shown):
            whole = bytearray(tok.byte_decoder[c] for c in "".join(pieces).replace("</w>", ""))
            out.append(Chip(f"{whole.decode('utf-8', errors='replace')} ({len(pieces)} tokens) ", word, len(pieces)))
        else:
            out += [Chip(s + (" " if p.endswith("</w>") else ""), word, 1) for s, p in zip(shown, pieces)]
    return out
