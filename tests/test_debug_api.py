"""Debugging a prompt through the API, on a launched app over the tiny models, driven through gradio_client: the
negative prompt on /generate and /sweep (old positional calls unchanged), /prompt_edit and /word_importance, and a
load of clients mixing the sampling endpoints. Values only raw JSON can carry, on these endpoints as on the others,
are in test_hardening.py."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

from clipdiff.images import read_params  # noqa: E402
from clipdiff.testing import stress  # noqa: E402

PROMPT = stress.PROMPT
DAISY, SUNFLOWER = stress.SWITCH


def pixels(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB")).astype(int)


def test_generate_and_sweep_take_a_negative_prompt_last(client):
    plain, *_ = client.predict(PROMPT, 2.0, 3, "ddim", 5, 1, api_name="/generate")
    negative, status, _ = client.predict(PROMPT, 2.0, 3, "ddim", 5, 1, "red", api_name="/generate")
    assert "Done" in status and read_params(negative[0]["image"])["negative_prompt"] == "red"
    assert "negative_prompt" not in read_params(plain[0]["image"])
    assert np.abs(pixels(plain[0]["image"]) - pixels(negative[0]["image"])).max() > 2
    loaded = client.predict(handle_file(negative[0]["image"]), api_name="/load_params")
    assert len(loaded) == 6, "/load_params answers as before; the PNG itself carries the negative prompt"
    _, cells, _, _ = client.predict(PROMPT, "0, 2", 5, 2, "ddim", "red", api_name="/sweep")
    assert [read_params(c["image"])["negative_prompt"] for c in cells] == ["red", "red"]
    names = {p["parameter_name"]: p for p in client.view_api(return_format="dict", print_info=False)[
        "named_endpoints"]["/generate"]["parameters"]}
    assert names["negative_prompt"]["parameter_default"] == "" and list(names)[-1] == "negative_prompt"


def test_prompt_edit_at_f1_is_prompt_a_alone_and_at_f0_prompt_b_alone(client):
    strip, gallery, status, seed = client.predict(DAISY, SUNFLOWER, "0, 0.5, 1", 9, 2.0, 4, "dpmsolver-karras",
                                                  api_name="/prompt_edit")
    assert seed == 9 and "Done" in status and len(gallery) == 3
    assert [read_params(g["image"])["switch_at"] for g in gallery] == [0.0, 0.5, 1.0]
    alone = {p: client.predict(p, 2.0, 4, "dpmsolver-karras", 9, 1, api_name="/generate")[0][0]["image"]
             for p in (DAISY, SUNFLOWER)}
    assert np.abs(pixels(gallery[2]["image"]) - pixels(alone[DAISY])).max() <= 1
    assert np.abs(pixels(gallery[0]["image"]) - pixels(alone[SUNFLOWER])).max() <= 1
    assert np.abs(pixels(gallery[1]["image"]) - pixels(alone[DAISY])).max() > 2
    client.predict(DAISY, SUNFLOWER, "0.5", 9, 2.0, 4, "ddim", api_name="/prompt_edit")
    with Image.open(client.predict(0, api_name="/playback_gif")) as gif:
        assert gif.n_frames == 4, "the strip is the session's last run, recorded for playback"


def test_word_importance_answers_json_for_api_clients(client):
    words, strip, figures, status, seed = client.predict("a red rose", 3, 2.0, 2, "ddim", api_name="/word_importance")
    assert figures["words"] == ["a", "red", "rose"] and len(figures["text_cosine"]) == len(figures["clip_score"]) == 3
    assert [w["token"].strip() for w in words] == ["a", "red", "rose"] and seed == 3
    assert len(figures["images"]) == 4 and all(i.startswith("data:image/png;base64,") for i in figures["images"])


@pytest.mark.parametrize("api, args, message", [
    ("/prompt_edit", (DAISY, SUNFLOWER, "0, x", 1, 2.0, 2, "ddim"), "switch fraction must be a number"),
    ("/prompt_edit", ("[a daisy:a rose", "", "0.5", 1, 2.0, 2, "ddim"), "without its"),
    ("/word_importance", ("", 1, 2.0, 2, "ddim"), "Type at least one prompt"),
    ("/generate", ("[a:b:c:d]", 2.0, 2, "ddim", 1, 1), "colons"),
    ("/generate", (PROMPT, 2.0, 2, "ddim", 1, 1, "x" * 10_001), "negative prompt is 10,001 characters"),
])
def test_bad_values_get_a_clear_error(client, api, args, message):
    with pytest.raises(AppError, match=message):
        client.predict(*args, api_name=api)


def test_clients_mixing_the_sampling_endpoints_all_get_answers(live_app, server_errors):
    figures = stress.load(live_app.url, clients=3, requests=3, steps=2, endpoints=tuple(stress.LOAD_CALLS))
    assert figures["failures"] == 0 and figures["answered"] == 9, figures
    assert server_errors() == []
