"""The room wall's store (clipdiff.wall): newest first, bounded with the oldest dropped and their files gone, text
made plain and short, removal only with the publisher's token or the admin key, and everything back after a
restart; many threads publishing at once lose nothing."""
from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from clipdiff.images import read_params
from clipdiff.wall import MAX_FIELD_CHARS, Wall, new_token, read_admin_key

PICTURE = np.full((16, 16, 3), 200, dtype=np.uint8)
SETTINGS = {"prompt": "a rose", "w": "2", "steps": "12", "sampler": "ddim", "seed": "7", "n": "1"}


def test_items_come_newest_first_with_their_png_and_its_parameters(tmp_path):
    wall = Wall(tmp_path)
    token = new_token()
    first = wall.publish(PICTURE, "a rose", SETTINGS, token, {"prompt": "a rose", "seed": 7})
    second = wall.publish(PICTURE, "a daisy", SETTINGS, token)
    assert [i.id for i in wall.items()] == [second.id, first.id]
    assert read_params(wall.image_path(first))["seed"] == 7, "the PNG loads back into Generate"
    assert token not in (tmp_path / "wall.jsonl").read_text(), "only the token's hash is kept"


def test_the_wall_is_bounded_and_the_oldest_go_with_their_files(tmp_path):
    wall = Wall(tmp_path, max_items=3)
    items = [wall.publish(PICTURE, f"p{k}", SETTINGS, "t") for k in range(5)]
    assert [i.title for i in wall.items()] == ["p4", "p3", "p2"]
    assert not wall.image_path(items[0]).exists() and not wall.image_path(items[1]).exists()
    assert sorted(p.name for p in tmp_path.glob("*.png")) == sorted(f"{i.id}.png" for i in items[2:])


def test_text_is_plain_and_capped(tmp_path):
    wall = Wall(tmp_path)
    item = wall.publish(PICTURE, "a\x00 rose\n\u202e<b>bold</b>\x1b[31m" + "x" * 5000,
                        {"prompt": "y" * 5000, "negative": "a\r\nb", "k\x07ey": "v", **{f"k{i}": "v" for i in range(50)}}, "t")
    assert "\x00" not in item.title and "\n" not in item.title and "\x1b" not in item.title
    assert item.title.startswith("a rose <b>bold</b> [31m"), "markup stays text (the wall shows it as text)"
    assert len(item.title) == MAX_FIELD_CHARS and len(item.settings["prompt"]) == MAX_FIELD_CHARS
    assert item.settings["negative"] == "a b" and "k ey" in item.settings and len(item.settings) <= 12


def test_only_the_publisher_or_the_admin_may_remove(tmp_path):
    wall = Wall(tmp_path, admin_key="instructor-key")
    mine, theirs = new_token(), new_token()
    a = wall.publish(PICTURE, "a", SETTINGS, mine)
    b = wall.publish(PICTURE, "b", SETTINGS, mine)
    assert not wall.remove(a.id, theirs) and not wall.remove(a.id, None) and not wall.remove(a.id, "", "wrong")
    assert not wall.remove(a.id, admin_key="") and wall.get(a.id) is not None
    assert wall.remove(a.id, mine) and not wall.image_path(a).exists()
    assert not wall.remove(a.id, mine), "gone already"
    assert wall.remove(b.id, theirs, "instructor-key"), "the instructor removes anyone's"
    assert len(wall) == 0
    assert not Wall(tmp_path / "no-admin").is_admin("instructor-key"), "no admin file, no admin"


def test_a_restart_loses_nothing_and_skips_a_broken_line(tmp_path):
    wall = Wall(tmp_path, max_items=4)
    kept = [wall.publish(PICTURE, f"p{k}", SETTINGS, "t") for k in range(3)]
    wall.remove(kept[1].id, "t")
    with (tmp_path / "wall.jsonl").open("a") as f:
        f.write('{"id": "not hex", "created": 1}\n{"half a line\n')
    again = Wall(tmp_path, max_items=4)
    assert [i.id for i in again.items()] == [kept[2].id, kept[0].id]
    assert again.items()[0] == wall.items()[0], "the same item, settings and publisher"
    assert again.remove(kept[0].id, "t"), "the publisher's token still works after the restart"
    assert [i.id for i in Wall(tmp_path, max_items=1).items()] == [kept[2].id], "a smaller bound drops the oldest"


def test_the_log_is_compacted_when_removals_pile_up(tmp_path):
    wall = Wall(tmp_path, max_items=2)
    for k in range(20):
        wall.publish(PICTURE, f"p{k}", SETTINGS, "t")
    lines = (tmp_path / "wall.jsonl").read_text().splitlines()
    assert len(lines) <= 2 * 2 + 1
    assert [i.title for i in Wall(tmp_path, max_items=2).items()] == ["p19", "p18"]
    assert all("id" in json.loads(line) or "removed" in json.loads(line) for line in lines)


def test_threads_publishing_at_once_lose_nothing(tmp_path):
    wall = Wall(tmp_path, max_items=50)

    def attendee(k):
        for j in range(10):
            wall.publish(PICTURE, f"{k}-{j}", SETTINGS, f"token-{k}")

    threads = [threading.Thread(target=attendee, args=(k,)) for k in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert len(wall) == 50 and len(list(tmp_path.glob("*.png"))) == 50
    assert len(Wall(tmp_path, max_items=50)) == 50, "the log agrees with the folder"


def test_the_admin_key_file(tmp_path):
    path = tmp_path / "key.txt"
    path.write_text("# the instructor's key\n\n  long-enough-key  \nsecond line\n")
    assert read_admin_key(path) == "long-enough-key"
    path.write_text("short\n")
    with pytest.raises(ValueError, match="at least 8"):
        read_admin_key(path)
    path.write_text("# only a comment\n")
    with pytest.raises(ValueError, match="no admin key"):
        read_admin_key(path)
