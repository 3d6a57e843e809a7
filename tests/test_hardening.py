"""Hardening: every input path tried with bad values on the live app, bad model files at load,
training faults mid-save, the exposure defaults. The long load, memory and fuzz runs are marked slow
(`pytest -m slow`); benchmarks/stress.py runs the same functions (clipdiff.testing.stress) and prints their figures.

Whether the server met an error that was not a clean refusal is read from its console, as an operator would: Gradio
prints a traceback for every failed event (the `server_errors` fixture)."""
from __future__ import annotations

import json
import os
import shutil
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch

gradio_client = pytest.importorskip("gradio_client")
pytest.importorskip("hypothesis")
import gradio as gr  # noqa: E402
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

from clipdiff.app.context import Models  # noqa: E402
from clipdiff.app.limits import MAX_UPLOAD_SIZE, QUEUE_SIZE  # noqa: E402
from clipdiff.testing import awkward_uploads, make_tiny_unet, refused_uploads, tiny_unet_config  # noqa: E402
from clipdiff.testing import stress  # noqa: E402
from clipdiff.testing.live import app_in_this_process  # noqa: E402

PROMPT = stress.PROMPT
DAISY, SUNFLOWER = stress.SWITCH


def still_answers(client) -> None:
    gallery, status, *_ = client.predict(PROMPT, 2.0, 2, "ddim", 1, 1, api_name="/generate")
    assert "Done" in status and len(gallery) == 1


# -- bad input through the API ----------------------------------------------------------------------------------
def test_fuzz_every_endpoint_with_generated_values(live_app, server_errors, tmp_path):
    """500 hypothesis cases, most on the cheap endpoints; deterministic here (derandomized), random in the slow run."""
    figures = stress.fuzz(live_app.url, cases=500, unhandled=server_errors, seed=0, tmp=tmp_path)
    print(f"fuzz: {figures}")
    assert figures["cases"] >= 500 and figures["ok"] > 0 and figures["refused"] > 0
    assert server_errors() == []


@pytest.mark.parametrize("api, data", [
    ("generate", [PROMPT, float("nan"), 2, "ddim", 1, 1]),
    ("generate", [PROMPT, 2.0, float("inf"), "ddim", 1, 1]),
    ("generate", [PROMPT, 2.0, 2, "ddim", float("-inf"), 1]),
    ("generate", [PROMPT, 2.0, 2, "ddim", 1, float("nan")]),
    ("generate", [PROMPT, 2.0, 2, "ddim", 10**30, 1]),
    ("generate", ["a \ud800 lone surrogate", 2.0, 1, "ddim", 1, 1]),
    ("generate", [[PROMPT], {"w": 1}, [2], ["ddim"], {}, []]),
    ("generate", [PROMPT]),
    ("tokens", ["bad \udfff half"]),
    ("sweep", [PROMPT, "nan, inf, 1e999", 1, 1, "ddim"]),
    ("interpolate", [PROMPT, "\ud83c", float("nan"), 1.0, 1, 1, "ddim"]),
    ("similarity", ["a rose", [{"path": "/etc/passwd", "meta": {"_type": "gradio.FileData"}}], False, "texts"]),
    ("load_params", [{"path": "/etc/passwd", "meta": {"_type": "gradio.FileData"}}]),
    ("vary", [{"path": "http://169.254.169.254/latest/meta-data", "meta": {"_type": "gradio.FileData"}},
              1, 1.0, 1, 1, "ddim"]),
    ("edit_photo", [{"path": "/etc/passwd", "meta": {"_type": "gradio.FileData"}}, False, PROMPT, float("nan"),
                    2.0, 1, 1, "ddim"]),
    ("forward_noise", [None, True, float("inf"), 1]),
    ("prompt_edit", [DAISY, SUNFLOWER, "0, 1", 1, float("nan"), 2, "ddim"]),
    ("prompt_edit", [DAISY, "\ud83c", "nan, inf", 1, 1.0, 2, "ddim"]),
    ("word_importance", [PROMPT, float("inf"), 1.0, 2, "ddim"]),
    ("word_importance", [["a", "list"], {}, None, [], 1]),
    ("generate", [PROMPT, 2.0, 2, "ddim", 1, 1, float("nan")]),
    ("sweep", [PROMPT, "0", 1, 1, "ddim", {"a": 1}]),
])
def test_values_json_clients_cannot_send_get_a_clear_answer(live_app, server_errors, client, api, data):
    """NaN, inf, lone surrogates and local paths or URLs as files: raw JSON, as any HTTP client can post it."""
    kind, payload = stress.raw_call(live_app.url, api, data)
    assert kind in ("complete", "error"), (kind, payload)
    if kind == "error":
        assert isinstance(payload, str) and payload.strip(), "an error without a message"
    assert server_errors() == []
    assert "root:" not in json.dumps(payload), "a file outside the uploads was read"
    still_answers(client)


def test_awkward_uploads_through_every_upload_path(live_app, server_errors, client, tmp_path):
    files = awkward_uploads(tmp_path)
    refused = refused_uploads(tmp_path)
    must_fail = {"bomb": "pixels|too large", "over-the-pixel-limit": "pixels|too large", "truncated": "not a readable",
                 "text-named-png": "not a readable", "pickle-named-png": "not a readable"}
    for name, path in {**files, **refused}.items():
        upload = handle_file(str(path))
        calls = [("/similarity", ("a red flower", [upload], False, "texts")),
                 ("/vary", (upload, 1, 1.0, 1, 1, "ddim")),
                 ("/embed_map", ("pca", "", [upload], False, False)),
                 ("/forward_noise", (upload, False, 10, 1))]
        for api, args in calls:
            if name in must_fail:
                with pytest.raises(AppError, match=must_fail[name]):
                    client.predict(*args, api_name=api)
            else:
                client.predict(*args, api_name=api)
        try:  # none of them carries clipdiff parameters
            client.predict(upload, api_name="/load_params")
            raise AssertionError(f"{name}: parameters loaded from a file that has none")
        except AppError as e:
            assert any(w in str(e) for w in ("PNG", "png", "large")), f"{name}: {e}"
        assert server_errors() == [], name
    still_answers(client)


# -- bad model files at load: the app starts and says what is wrong --------------------------------------------
class Exploit:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "pwned"))


def broken_unets(root: Path, good: Path, clip_dir: Path) -> dict[str, tuple[Path, str]]:
    made = {}

    def copy(name: str) -> Path:
        folder = root / name
        shutil.copytree(good, folder)
        return folder

    folder = copy("wrong-shapes")
    config = json.loads((folder / "config.json").read_text())
    config["unet"]["block_out_channels"] = [24, 48]
    config["unet"]["norm_num_groups"] = 8
    (folder / "config.json").write_text(json.dumps(config))
    made["wrong-shapes"] = (folder, "shape mismatch")
    folder = copy("truncated")
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[:len(data) // 2])
    made["truncated"] = (folder, "not a readable safetensors")
    made["other-embedding-size"] = (make_tiny_unet(root / "other-size", f"local-dir:{clip_dir}", cond_dim=48),
                                    "48-d")
    folder = copy("pickle")
    marker = root / "pwned.txt"
    torch.save({"state": Exploit(str(marker))}, folder / "model.safetensors")
    made["pickle"] = (folder, "pickle renamed")
    return made


def test_bad_checkpoints_give_an_app_that_starts_and_says_what_is_wrong(tmp_path, tiny_clip_dir, tiny_unet_dir):
    from clipdiff.app.blocks import build_app

    for name, (folder, message) in broken_unets(tmp_path, tiny_unet_dir, tiny_clip_dir).items():
        models = Models.load(folder, str(tiny_clip_dir), None, None, "cpu")
        assert models.pipeline is None and models.encoder is not None, name
        assert len(models.problems) == 1 and message in models.problems[0], (name, models.problems)
        assert message in models.status_markdown()
        with pytest.raises(gr.Error, match="diffusion model is not loaded"):
            models.need_pipeline()
        build_app(models)
    assert not (tmp_path / "pwned.txt").exists(), "the pickle ran"

    clip = tmp_path / "pickled-clip"
    shutil.copytree(tiny_clip_dir, clip)
    torch.save({"state": Exploit(str(tmp_path / "pwned-clip.txt"))}, clip / "open_clip_model.safetensors")
    models = Models.load(tiny_unet_dir, str(clip), None, None, "cpu")
    assert models.encoder is None and models.pipeline is None and "CLIP" in models.problems[0]
    assert not (tmp_path / "pwned-clip.txt").exists(), "the pickle ran"
    build_app(models)


def test_an_app_with_a_broken_unet_still_serves_what_it_can(tmp_path, tiny_clip_dir, tiny_unet_dir, server_errors):
    folder, _ = broken_unets(tmp_path, tiny_unet_dir, tiny_clip_dir)["truncated"]
    with app_in_this_process(Models.load(folder, str(tiny_clip_dir), None, None, "cpu")) as app:
        c = Client(app.url, verbose=False)
        try:
            with pytest.raises(AppError, match="not a readable safetensors"):
                c.predict(PROMPT, 2.0, 2, "ddim", 1, 1, api_name="/generate")
            pieces, summary = c.predict(PROMPT, api_name="/tokens")
            assert "tokens" in summary
            assert server_errors() == []
        finally:
            c.close()


# -- training faults --------------------------------------------------------------------------------------------
def small_run():
    from clipdiff.unet import ConditionalUNet

    torch.manual_seed(0)
    model = ConditionalUNet(tiny_unet_config())
    ema = ConditionalUNet(tiny_unet_config())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    return model, ema, optimizer


def train_step(model, ema, optimizer) -> None:
    from clipdiff.training.common import ema_update

    x = torch.randn(2, 3, 16, 16)
    loss = (model(x, torch.tensor([3, 7]), torch.randn(2, 32)) - x).pow(2).mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    ema_update(ema, model, 0.9)


@pytest.mark.parametrize("failing_write", [1, 2, 3, 4, 5])
def test_a_crash_or_full_disk_mid_save_leaves_the_previous_step_whole(tmp_path, monkeypatch, failing_write):
    """The n-th file write of save_run fails half way (ENOSPC): the previous step loads, every file of it,
    and training resumes from it; no temporary files are left behind."""
    import clipdiff.checkpoints as checkpoints
    from clipdiff.training.common import RunState, load_run, save_run

    model, ema, optimizer = small_run()
    train_step(model, ema, optimizer)
    save_run(tmp_path, RunState(1, 1.0), model, optimizer, ema)
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    saved_ema = {k: v.clone() for k, v in ema.state_dict().items()}
    saved_moments = [s["exp_avg"].clone() for s in optimizer.state_dict()["state"].values()]
    train_step(model, ema, optimizer)

    writes = {"n": 0}
    real_write = checkpoints._atomic_write

    def full_disk(path, write):
        writes["n"] += 1
        if writes["n"] != failing_write:
            return real_write(path, write)

        def half_then_fail(tmp):
            write(tmp)
            Path(tmp).write_bytes(Path(tmp).read_bytes()[:100])
            raise OSError(28, "No space left on device")
        return real_write(path, half_then_fail)

    monkeypatch.setattr(checkpoints, "_atomic_write", full_disk)
    with pytest.raises(OSError, match="No space"):
        save_run(tmp_path, RunState(2, 2.0), model, optimizer, ema)
    monkeypatch.undo()

    fresh, fresh_ema, fresh_optimizer = small_run()
    state = load_run(tmp_path, fresh, fresh_optimizer, fresh_ema)
    assert state.step == 1 and state.seconds == 1.0
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, saved[k]), f"model {k} is not step 1's"
    for k, v in fresh_ema.state_dict().items():
        assert torch.equal(v, saved_ema[k]), f"EMA {k} is not step 1's"
    moments = [s["exp_avg"] for s in fresh_optimizer.state_dict()["state"].values()]
    assert all(torch.equal(a, b) for a, b in zip(moments, saved_moments)), "optimizer moments are not step 1's"
    leftovers = [p.name for p in tmp_path.rglob("*") if p.name.endswith(".tmp") or p.name == ".saving"]
    assert leftovers == []
    train_step(fresh, fresh_ema, fresh_optimizer)          # and training goes on from there
    save_run(tmp_path, RunState(2, 2.0), fresh, fresh_optimizer, fresh_ema)
    model, ema, optimizer = small_run()
    assert load_run(tmp_path, model, optimizer, ema).step == 2


def test_a_crash_while_moving_a_complete_step_into_place_is_finished_on_load(tmp_path, monkeypatch):
    from clipdiff.training import common
    from clipdiff.training.common import RunState, load_run, save_run

    model, ema, optimizer = small_run()
    save_run(tmp_path, RunState(1, 1.0), model, optimizer, ema)
    train_step(model, ema, optimizer)
    moved = {"n": 0}
    real_replace = os.replace

    def crash_after_two(src, dst):
        if Path(dst).parent == tmp_path:        # moving the complete step into place, not writing it
            if moved["n"] == 2:
                raise KeyboardInterrupt("power cut")
            moved["n"] += 1
        return real_replace(src, dst)

    monkeypatch.setattr(common.os, "replace", crash_after_two)
    with pytest.raises(KeyboardInterrupt):
        save_run(tmp_path, RunState(2, 2.0), model, optimizer, ema)
    monkeypatch.undo()
    fresh, fresh_ema, fresh_optimizer = small_run()
    assert load_run(tmp_path, fresh, fresh_optimizer, fresh_ema).step == 2
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), model.state_dict().values()))
    assert all(torch.equal(a, b) for a, b in zip(fresh_ema.state_dict().values(), ema.state_dict().values()))
    assert not (tmp_path / common.PENDING_DIR).exists()


def test_an_unexpected_failure_answers_in_one_sentence_and_keeps_server_paths_private(client, server_errors,
                                                                                       monkeypatch):
    from clipdiff.app import runs

    def broken(*args, **kwargs):
        raise RuntimeError("cannot read /srv/private/weights.bin")

    monkeypatch.setattr(runs, "clip_scores", broken)
    with pytest.raises(AppError) as failed:
        client.predict(PROMPT, 2.0, 2, "ddim", 1, 1, api_name="/generate")
    assert "went wrong in generate (RuntimeError)" in str(failed.value)
    assert "/srv/private" not in str(failed.value)
    found = server_errors()
    assert found and "UnexpectedError" in found[-1], "the fuzz tests' detector must see it"
    monkeypatch.undo()
    still_answers(client)


def test_a_sessions_recorded_frames_are_released_when_its_state_expires(tiny_clip_dir, tiny_unet_dir, monkeypatch):
    from clipdiff.app import session

    released = []   # (run, frames it held when released)
    done = threading.Event()
    release = session.release_run

    def watched_release(run):
        if isinstance(run, session.LastRun):
            released.append((run, len(run.playback.records)))
            release(run)
            done.set()
        else:
            release(run)

    monkeypatch.setattr(session, "release_run", watched_release)
    models = Models.load(tiny_unet_dir, str(tiny_clip_dir), None, None, "cpu")
    with app_in_this_process(models, session_ttl_s=1) as app:
        client = Client(app.url, verbose=False)
        still_answers(client)
        assert done.wait(timeout=30), "the expired session's run was never handed to the delete callback"
        run, frames_before = released[0]
        assert frames_before == 2, "the run recorded both steps"
        assert run.playback.records == [] and run.playback.cosines is None
        still_answers(client)


# -- exposure ---------------------------------------------------------------------------------------------------
def test_exposure_defaults(live_app):
    import app as app_script

    args = app_script.parse_args([])
    assert args.host == "127.0.0.1" and args.share is False and args.max_queue == QUEUE_SIZE
    assert os.environ["GRADIO_ANALYTICS_ENABLED"] == "False" and os.environ["HF_HUB_OFFLINE"] == "1"
    demo = live_app.demo
    assert demo.server_name == "127.0.0.1" and demo.share is False and demo.share_url is None
    assert demo.analytics_enabled is False
    assert demo.max_file_size == gr.FileSize.MB * 10 and MAX_UPLOAD_SIZE == "10mb"
    assert not demo.allowed_paths and not getattr(demo, "mcp_server", False)
    config = json.loads(urllib.request.urlopen(live_app.url + "config", timeout=10).read())
    assert not any("flag" in str(c.get("props", {}).get("label", "")).lower() for c in config["components"])
    version = tuple(int(x) for x in gr.__version__.split(".")[:3])
    # fixed in: 6.6.0 (SSRF via gr.load proxy_url, CVE-2026-28416), 6.7.0 (static path traversal, CVE-2026-28414),
    # 6.16.0 (FileExplorer path traversal, GHSA-j36p-7w88-g82j), 6.20.0 (SSRF/open redirect via /file=, CVE-2026-59806)
    assert version >= (6, 20, 0), f"gradio {gr.__version__} has known path traversal / SSRF advisories"

    for path in ("gradio_api/file=/etc/passwd", "gradio_api/file=../../../../etc/passwd",
                 "gradio_api/file=" + str(Path(__file__).resolve()),
                 "gradio_api/file=http://169.254.169.254/latest/meta-data", "file=/etc/passwd"):
        try:
            with urllib.request.urlopen(live_app.url + path, timeout=10) as r:
                body = r.read()
                raise AssertionError(f"/{path} answered {r.status}: {body[:80]!r}")
        except urllib.error.HTTPError as e:
            assert e.code in (403, 404), (path, e.code)


def test_auth_file_lines_and_mistakes(tmp_path):
    import app as app_script

    logins = tmp_path / "room.txt"
    logins.write_text("# the workshop\nana:s3cret\n\n  bo : pass:with:colons\n")
    assert app_script.read_auth_file(logins) == [("ana", "s3cret"), ("bo", " pass:with:colons")]
    for bad in ("ana\n", ":nouser\n", "ana:\n", "# only a comment\n"):
        logins.write_text(bad)
        with pytest.raises(ValueError):
            app_script.read_auth_file(logins)
    with pytest.raises(SystemExit):
        app_script.parse_args(["--auth-file", str(tmp_path / "missing.txt")])


def test_with_a_login_the_api_answers_only_logged_in_clients(tiny_clip_dir, tiny_unet_dir):
    models = Models.load(tiny_unet_dir, str(tiny_clip_dir), None, None, "cpu")
    with app_in_this_process(models, auth=[("ana", "s3cret")]) as app:
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(app.url + "config", timeout=10)
        assert refused.value.code == 401
        with pytest.raises(Exception):
            Client(app.url, verbose=False, auth=("ana", "wrong"))
        still_answers(Client(app.url, verbose=False, auth=("ana", "s3cret")))


def test_uploads_over_the_size_limit_are_refused(live_app, tmp_path):
    big = tmp_path / "big.png"
    big.write_bytes(os.urandom(11 * 1024 * 1024))
    boundary = "clipdiffboundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"big.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + big.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(live_app.url + "gradio_api/upload", body,
                                     {"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=60)
    assert refused.value.code == 413


# -- the long runs: `pytest -m slow` (benchmarks/stress.py prints the same figures) ------------------------------
@pytest.mark.slow
def test_fuzz_long_random(live_app, server_errors, tmp_path):
    figures = stress.fuzz(live_app.url, cases=2000, unhandled=server_errors, seed=None, tmp=tmp_path)
    print(f"fuzz: {figures}")
    assert figures["cases"] >= 2000 and server_errors() == []


@pytest.mark.slow
def test_load_16_clients_x_10_requests(live_app):
    # 16 clients, one request in flight each, fit the app's default queue: none may be turned away
    figures = stress.load(live_app.url, clients=QUEUE_SIZE, requests=10, steps=2, endpoints=tuple(stress.LOAD_CALLS))
    print(f"load: {figures}")
    assert figures["failures"] == 0 and figures["answered"] == 160


@pytest.mark.slow
def test_memory_growth_over_300_generations(live_app):
    figures = stress.memory(live_app.url, os.getpid(), generations=300)
    print(f"memory: {figures}")
    assert figures["growth_mb"] < 50


@pytest.mark.slow
def test_a_full_queue_says_busy(tiny_clip_dir, tiny_unet_dir, server_errors):
    with app_in_this_process(Models.load(tiny_unet_dir, str(tiny_clip_dir), None, None, "cpu"), max_queue=3) as app:
        figures = stress.queue_full(app.url, max_queue=3, extra=4)
        print(f"queue: {figures}")
        assert figures["refused"] >= 4 and all("try again" in m for m in figures["messages"])
        still_answers(Client(app.url, verbose=False))
        assert server_errors() == []


def test_a_refusal_logs_one_line_and_no_traceback(client, capfd, caplog):
    """An expected refusal (here an empty prompt) is no server failure: the log gets one line naming the handler and
    the reason, Gradio prints no traceback for it; the client still reads the reason."""
    import logging

    capfd.readouterr()
    with caplog.at_level(logging.WARNING, logger="clipdiff.app"), pytest.raises(AppError) as refused:
        client.predict("", 2.0, 2, "ddim", 1, 1, api_name="/generate")
    lines = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(lines) == 1 and lines[0].startswith("generate refused: ") and str(refused.value) in lines[0]
    assert "Traceback" not in capfd.readouterr().err
