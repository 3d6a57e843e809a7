"""The Wall tab's handlers, called directly: publishing a session's last run, the wall newest first with plain
captions, removal only by the publisher or the instructor, "try this" reading an item as a share link; refusals when
the wall is off. And in real browsers: what one page publishes, another sees within 5 s, as text, never markup."""
from __future__ import annotations

from dataclasses import replace

import pytest

gr = pytest.importorskip("gradio")

from clipdiff.app.tabs import generate, wall as tab  # noqa: E402
from clipdiff.images import read_params  # noqa: E402
from clipdiff.testing.browser import open_tab, wait_for_text  # noqa: E402
from clipdiff.wall import Wall  # noqa: E402

ADMIN = "the-instructor-key"


@pytest.fixture
def wall_ctx(ctx, tmp_path):
    return replace(ctx, wall=Wall(tmp_path / "wall", admin_key=ADMIN))


def last_run(ctx, prompts="A deep red rose flower", n=2, negative=""):
    return list(generate.generate(ctx, prompts, 2.0, 2, "ddim", 7, n, negative))[-1][3]


def test_publishing_the_best_image_puts_it_first_with_its_settings(wall_ctx):
    run = last_run(wall_ctx, "A deep red rose flower\n[a daisy:a sunflower:0.5]", negative="white")
    status, token, first = tab.publish(wall_ctx, "best", run, None)
    assert "Published your best image" in status and token and len(first) == 32
    best = max(range(4), key=lambda i: run.scores[i])
    item = wall_ctx.wall.get(first)
    assert item.settings["seed"] == str(run.params[best]["seed"]) and item.settings["negative"] == "white"
    assert read_params(wall_ctx.wall.image_path(item))["seed"] == run.params[best]["seed"]
    status, again, _ = tab.publish(wall_ctx, "all", run, token)
    assert "4 images" in status and again == token, "the session keeps one publisher token"
    gallery, shown, version, count = tab.show_wall(wall_ctx, None)
    assert len(gallery) == 5 and shown[-1] == first, "newest first"
    assert "w 2 | 2 ddim steps | seed" in gallery[0][1] and "5 image(s)" in count
    assert any(c.startswith("[a daisy:a sunflower:0.5] | ") for _, c in gallery), "a switch as the prompt box writes it"
    assert tab.show_wall(wall_ctx, version) == (gr.skip(),) * 4, "unchanged: the timer's refresh sends nothing"


def test_try_this_fills_generate_as_a_share_link_would(wall_ctx):
    run = last_run(wall_ctx, "[a daisy:a sunflower:0.5]", n=1, negative="white")
    _, _, item_id = tab.publish(wall_ctx, "best", run, None)
    *controls, tabs = tab.try_this(wall_ctx, item_id)
    assert controls == ["[a daisy:a sunflower:0.5]", 2.0, 2, "ddim", 7, 1, "white"]
    assert tabs.selected == "generate"
    with pytest.raises(gr.Error, match="Click one of the wall's pictures"):
        tab.try_this(wall_ctx, "../../etc/passwd")


def test_only_the_publisher_or_the_instructor_removes(wall_ctx):
    run = last_run(wall_ctx, n=1)
    _, token, item_id = tab.publish(wall_ctx, "best", run, None)
    with pytest.raises(gr.Error, match="Only the one who published"):
        tab.remove(wall_ctx, item_id, "", "another session's token")
    with pytest.raises(gr.Error, match="Only the one who published"):
        tab.remove(wall_ctx, item_id, "a wrong key", None)
    assert tab.remove(wall_ctx, item_id, "", token) == ("Removed from the wall.", "")
    with pytest.raises(gr.Error, match="no longer on the wall"):
        tab.remove(wall_ctx, item_id, "", token)
    _, _, item_id = tab.publish(wall_ctx, "best", run, None)
    assert tab.remove(wall_ctx, item_id, ADMIN, None)[0] == "Removed from the wall."
    with pytest.raises(gr.Error, match="Click one of the wall's pictures"):
        tab.remove(wall_ctx, None, ADMIN, None)


def test_without_a_wall_every_endpoint_refuses_clearly(ctx):
    for call in (lambda: tab.publish(ctx, "best", None, None), lambda: tab.remove(ctx, "0" * 32, "", None),
                 lambda: tab.try_this(ctx, "0" * 32)):
        with pytest.raises(gr.Error, match="The wall is off"):
            call()
    gallery, _, _, count = tab.show_wall(ctx, None)
    assert gallery == [] and "wall is off" in count


def test_nothing_to_publish_before_a_run(wall_ctx):
    with pytest.raises(gr.Error, match="generate some images first"):
        tab.publish(wall_ctx, "best", None, None)
    with pytest.raises(gr.Error, match="generate some images first"):
        tab.publish(wall_ctx, "all", {"frames": "forged"}, None)


@pytest.fixture(scope="module")
def wall_app(tiny_models, tmp_path_factory):
    """The real app with a wall, its queue long enough for a room of 30 attendees at once."""
    pytest.importorskip("gradio_client")
    from clipdiff.testing.live import app_in_this_process

    with app_in_this_process(tiny_models, preview_every_s=0, max_queue=64,
                             room_wall=Wall(tmp_path_factory.mktemp("wall"), admin_key=ADMIN)) as app:
        yield app


MARKUP = '<img src=x onerror="window.pwned=1">a rose'


def test_published_in_one_page_seen_in_another_within_5_s(wall_app, page):
    reader = page.context.browser.new_page(viewport={"width": 1280, "height": 800})
    try:
        reader.goto(wall_app.url)
        open_tab(reader, "Wall")
        before = reader.locator("#wall-gallery img").count()

        page.goto(wall_app.url)
        open_tab(page, "Generate")
        page.fill("#prompts textarea", MARKUP)
        page.click("#generate")
        wait_for_text(page, "#status", "Done")
        page.click("#publish-best")
        wait_for_text(page, "#publish-status", "Published")

        reader.wait_for_function("(n) => document.querySelectorAll('#wall-gallery img').length > n", arg=before,
                                 timeout=5000)
        wait_for_text(reader, "#wall-gallery", '<img src=x onerror="window.pwned=1">a rose')
        assert reader.evaluate("() => window.pwned") is None, "a caption is text, never markup"
        assert reader.locator("#wall-gallery img[src='x']").count() == 0

        reader.locator("#wall-gallery img").first.click()
        reader.wait_for_function("() => document.querySelector('#wall-selected textarea, #wall-selected input')"
                                 "?.value.length === 32")
        reader.click("#wall-remove")
        reader.get_by_text("Only the one who published").first.wait_for()
        reader.click("#wall-try")
        reader.get_by_role("tab", name="Generate", exact=True, selected=True).wait_for()
        assert reader.input_value("#prompts textarea") == MARKUP
    finally:
        reader.close()


def test_fuzz_the_wall_endpoints(wall_app, server_errors, tmp_path):
    """Whatever a client sends to the wall's endpoints (ids, keys), a result or a clear refusal, nothing unhandled
    (the endpoints without inputs have one case each: hypothesis does not repeat itself)."""
    from clipdiff.testing import stress

    figures = stress.fuzz(wall_app.url, cases=100, unhandled=server_errors, seed=0, tmp=tmp_path, only_wall=True)
    assert figures["cases"] >= 40 and figures["ok"] > 0 and figures["refused"] > 0
    assert server_errors() == []


@pytest.mark.slow
def test_30_attendees_publish_and_read_the_wall(wall_app):
    from clipdiff.testing import stress

    figures = stress.wall_load(wall_app.url, attendees=30, reads=3)
    print(f"wall load: {figures}")
    assert figures["failures"] == 0, figures["errors"]
    assert figures["published"] == 30 and figures["reads"] == 90
