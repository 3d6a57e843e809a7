"""The room wall: finished images an attendee published for everyone on the same server, newest first.

A folder holds `wall.jsonl` (one JSON line per published item, then one `{"removed": id}` line per removal; read
back in order at start, so a restart loses nothing) and each item's PNG. The wall is bounded: past `max_items` the
oldest go, their PNGs with them. Everything an item says is text from a browser: each field is stripped of control
characters and capped in length here, so whatever shows it gets plain short text (and shows it as text, never
markup). An item is removable by the one who published it, who proves it with the random token the wall gave them
(only its hash is kept), or by an instructor holding the admin key. Thread-safe: one lock around every change."""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import threading
import time
import unicodedata
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .images import save_png

log = logging.getLogger("clipdiff.wall")
MAX_ITEMS = 500
MAX_FIELD_CHARS = 300          # any one text field of an item (a prompt, a setting)
MAX_FIELDS = 12                # settings per item
LOG_NAME = "wall.jsonl"
ITEM_ID = frozenset("0123456789abcdef")


# Bidirectional overrides and isolates: on a wall the whole room reads, they could make a caption read backwards.
BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def clean_text(value, limit: int = MAX_FIELD_CHARS) -> str:
    """Plain text of at most `limit` characters: control characters (newlines too) as spaces, lone surrogates and
    bidirectional overrides dropped, runs of spaces made one. Other format characters (emoji joiners) stay."""
    text = "".join(" " if unicodedata.category(ch) == "Cc" else ch for ch in str(value)
                   if unicodedata.category(ch) != "Cs" and ch not in BIDI_CONTROLS)
    return " ".join(text.split())[:limit]


def new_token() -> str:
    """A publisher's secret: it proves who published an item; the wall keeps only its hash."""
    return secrets.token_urlsafe(24)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


@dataclass(frozen=True)
class WallItem:
    id: str                      # 32 hex digits, also the PNG's name
    created: float               # seconds since the epoch
    title: str                   # what the wall says under the picture: the prompt
    settings: dict[str, str]     # how to make it again (the app's share-link keys), plain text
    publisher: str               # the hash of the publisher's token

    @classmethod
    def read(cls, record: dict) -> "WallItem":
        """An item from its line in the log, held to the same caps as a new one (the file may have been edited)."""
        item_id = str(record["id"])
        if len(item_id) != 32 or not set(item_id) <= ITEM_ID:
            raise ValueError(f"bad item id {item_id!r}")
        settings = record.get("settings") or {}
        if not isinstance(settings, dict):
            raise ValueError("settings are not a mapping")
        return cls(item_id, float(record["created"]), clean_text(record.get("title", "")),
                   clean_settings(settings), str(record["publisher"]))


def clean_settings(settings: dict) -> dict[str, str]:
    return {clean_text(k, 40): clean_text(v) for k, v in list(settings.items())[:MAX_FIELDS]}


class Wall:
    """The room's wall in `folder`, at most `max_items` items; admin_key: the instructor's key (None: none)."""

    def __init__(self, folder: str | Path, max_items: int = MAX_ITEMS, admin_key: str | None = None):
        if max_items < 1:
            raise ValueError("a wall holds at least one item")
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.max_items = max_items
        self._admin_hash = token_hash(admin_key) if admin_key else None
        self._lock = threading.Lock()
        self._items: dict[str, WallItem] = {}     # oldest first (dicts keep insertion order)
        self._log_lines = 0
        self.version = 0                          # moves on with every change: a reader can skip an unchanged wall
        self._load()

    # -- reading -------------------------------------------------------------------------------------------------
    def items(self, limit: int | None = None) -> list[WallItem]:
        """Newest first."""
        with self._lock:
            items = list(self._items.values())
        items.reverse()
        return items[:limit] if limit is not None else items

    def get(self, item_id: str) -> WallItem | None:
        with self._lock:
            return self._items.get(str(item_id))

    def image_path(self, item: WallItem) -> Path:
        return self.folder / f"{item.id}.png"

    def __len__(self) -> int:
        return len(self._items)

    # -- changing ------------------------------------------------------------------------------------------------
    def publish(self, image: np.ndarray | Image.Image, title: str, settings: dict, token: str,
                png_params: dict | None = None) -> WallItem:
        """A new item, newest on the wall; the oldest go past max_items. image: (H, W, 3) uint8 or a PIL image;
        png_params: what the PNG carries (clipdiff's parameters), for a download that loads back."""
        if not token:
            raise ValueError("publishing needs the publisher's token")
        picture = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image, dtype=np.uint8))
        item = WallItem(uuid.uuid4().hex, time.time(), clean_text(title), clean_settings(dict(settings)),
                        token_hash(token))
        save_png(picture.convert("RGB"), self.image_path(item), png_params or {})
        with self._lock:
            self._items[item.id] = item
            self._append(asdict(item))
            while len(self._items) > self.max_items:
                self._drop(next(iter(self._items)))
            self.version += 1
            self._compact_if_long()
        return item

    def can_remove(self, item_id: str, token: str | None = None, admin_key: str | None = None) -> bool:
        """Whether this token published the item, or admin_key is the instructor's key."""
        item = self.get(item_id)
        if item is None:
            return False
        return (bool(token) and hmac.compare_digest(item.publisher, token_hash(token))) or self.is_admin(admin_key)

    def is_admin(self, admin_key: str | None) -> bool:
        return bool(admin_key) and self._admin_hash is not None and \
            hmac.compare_digest(self._admin_hash, token_hash(admin_key))

    def remove(self, item_id: str, token: str | None = None, admin_key: str | None = None) -> bool:
        """Remove an item for its publisher (their token) or the instructor (the admin key); False if it is gone
        already or the caller may not."""
        if not self.can_remove(item_id, token, admin_key):
            return False
        with self._lock:
            if item_id not in self._items:
                return False
            self._drop(item_id)
            self.version += 1
            self._compact_if_long()
        return True

    # -- the files (called with the lock held, or before the wall is shared) ---------------------------------------
    @property
    def log_path(self) -> Path:
        return self.folder / LOG_NAME

    def _drop(self, item_id: str) -> None:
        item = self._items.pop(item_id)
        self._append({"removed": item_id})
        self.image_path(item).unlink(missing_ok=True)

    def _append(self, record: dict) -> None:
        with self.log_path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._log_lines += 1

    def _compact_if_long(self) -> None:
        """Removals add lines: past twice the items the log is rewritten (atomically) with the live items only."""
        if self._log_lines <= 2 * self.max_items:
            return
        temporary = self.log_path.with_suffix(".tmp")
        with temporary.open("w", encoding="utf-8") as f:
            for item in self._items.values():
                f.write(json.dumps(asdict(item), ensure_ascii=False) + "\n")
        os.replace(temporary, self.log_path)
        self._log_lines = len(self._items)

    def _load(self) -> None:
        """The items as the log left them. A line that cannot be read (a crash mid-write, a hand edit) is skipped
        with a warning; an item whose PNG is missing is left out."""
        if not self.log_path.exists():
            return
        for number, line in enumerate(self.log_path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            self._log_lines += 1
            try:
                record = json.loads(line)
                if "removed" in record:
                    self._items.pop(str(record["removed"]), None)
                    continue
                item = WallItem.read(record)
            except (ValueError, KeyError, TypeError, AttributeError) as e:
                log.warning("wall log %s line %d skipped: %s", self.log_path, number, e)
                continue
            if self.image_path(item).exists():
                self._items[item.id] = item
        while len(self._items) > self.max_items:
            self._drop(next(iter(self._items)))
        self.version = 1


def read_admin_key(path: str | Path) -> str:
    """The instructor's key: the file's first non-blank line that is not a # comment. Raises ValueError when the
    file has none or it is shorter than 8 characters (too easy to guess)."""
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            if len(line) < 8:
                raise ValueError("the admin key must be at least 8 characters")
            return line
    raise ValueError("no admin key in it")
