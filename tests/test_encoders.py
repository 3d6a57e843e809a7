"""The CLIP encoder interface: tokens, embeddings, the text cache, local-only loading that fails fast."""
from __future__ import annotations

import json
import time

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from clipdiff import encoders
from clipdiff.encoders import ClipEncoder, ClipWeightsMissing
from clipdiff.testing import TINY_CLIP_CONFIG

LONG_PROMPT = " ".join(["a lovely red rose with soft petals"] * 20)


@pytest.fixture(scope="module")
def encoder(tiny_clip_dir) -> ClipEncoder:
    return ClipEncoder.load(str(tiny_clip_dir), device="cpu")


# -- loading ---------------------------------------------------------------------------------------------------

def test_local_dir_loads_with_its_facts(tiny_clip_dir, encoder):
    assert encoder.embed_dim == 32
    assert encoder.image_size == 32
    assert encoder.context_length == 77
    assert encoder.identity == f"local-dir:{tiny_clip_dir}"
    same = ClipEncoder.load(f"local-dir:{tiny_clip_dir}", device="cpu")
    assert torch.equal(same.encode_text(["a rose"]), encoder.encode_text(["a rose"]))


def test_folder_without_config_is_a_clear_error(tmp_path):
    with pytest.raises(ClipWeightsMissing, match="open_clip_config.json"):
        ClipEncoder.load(str(tmp_path), device="cpu")


def test_missing_pretrained_weight_fails_fast_with_how_to(tmp_path):
    start = time.perf_counter()
    with pytest.raises(ClipWeightsMissing) as err:
        ClipEncoder.load("ViT-B-32", "openai", device="cpu", cache_dir=str(tmp_path))
    assert time.perf_counter() - start < 5  # fail-fast check (open_clip alone retries ~47 s offline)
    msg = str(err.value)
    assert "ViT-B-32" in msg and "openai" in msg
    assert "never downloads" in msg and "--clip-pretrained" in msg   # says how to provide it
    assert str(tmp_path) in msg                                      # and where it looked


def test_unknown_tag_and_no_tag_are_clear_errors(tmp_path):
    with pytest.raises(ClipWeightsMissing, match="neither a weights file nor a known tag"):
        ClipEncoder.load("ViT-B-32", "no-such-tag", device="cpu", cache_dir=str(tmp_path))
    with pytest.raises(ClipWeightsMissing, match="--clip-pretrained"):
        ClipEncoder.load("ViT-B-32", None, device="cpu")


def test_local_weights_file_for_an_open_clip_architecture(tmp_path):
    name = "clipdiff-test-tiny"
    config_dir = tmp_path / "configs"
    config_dir.mkdir()
    (config_dir / f"{name}.json").write_text(json.dumps(TINY_CLIP_CONFIG))
    open_clip.add_model_config(config_dir)
    torch.manual_seed(3)
    model = open_clip.create_model(name).eval()
    weights = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))

    enc = ClipEncoder.load(name, pretrained=str(weights), device="cpu")
    assert enc.identity == f"{name}:{weights}"
    assert enc.embed_dim == 32
    with torch.no_grad():
        expected = model.encode_text(open_clip.tokenize(["a red rose"]))
    assert torch.allclose(enc.encode_text(["a red rose"]), expected, atol=1e-5)


# -- tokens ----------------------------------------------------------------------------------------------------

def test_tokenize_shows_pieces_ids_and_count(encoder):
    view = encoder.tokenize("A red rose")
    assert view.pieces[0] == "<start>" and view.pieces[-1] == "<end>"
    assert "".join(view.pieces[1:-1]).strip() == "a red rose"
    assert view.ids == [i for i in open_clip.tokenize(["A red rose"])[0].tolist() if i != 0]
    assert view.count == len(view.ids) == len(view.pieces) == 5
    assert view.context_length == 77
    assert not view.truncated and view.kept_text == "a red rose"


def test_tokenize_flags_truncation(encoder):
    view = encoder.tokenize(LONG_PROMPT)
    assert view.truncated
    assert view.count > 77
    assert len(view.ids) == len(view.pieces) == 77
    assert view.ids == open_clip.tokenize([LONG_PROMPT])[0].tolist()   # exactly what the model reads
    assert len(view.kept_text) < len(LONG_PROMPT)
    assert LONG_PROMPT.startswith(view.kept_text)


def test_tokenize_at_the_limit_is_not_truncated(encoder):
    text = " ".join(["rose"] * 75)  # 75 tokens + start + end = 77
    view = encoder.tokenize(text)
    assert view.count == 77 and not view.truncated
    assert encoder.tokenize(text + " rose").truncated


# -- embeddings ------------------------------------------------------------------------------------------------

def test_encode_text_shape_and_dtype(encoder):
    emb = encoder.encode_text(["a red rose", "a white daisy", "a red rose"])
    assert emb.shape == (3, 32) and emb.dtype == torch.float32
    assert not emb.requires_grad
    assert torch.equal(emb[0], emb[2])
    assert not torch.allclose(emb[0], emb[1])


def test_encode_image_shape_and_dtype(encoder):
    rng = np.random.default_rng(0)
    pil = [Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)) for _ in range(3)]
    emb = encoder.encode_image(pil)
    assert emb.shape == (3, 32) and emb.dtype == torch.float32
    from_tensor = encoder.encode_image(torch.rand(2, 3, 16, 16) * 2 - 1)   # resized to the model's size
    assert from_tensor.shape == (2, 32) and from_tensor.dtype == torch.float32


def test_encode_image_batches_agree(encoder, monkeypatch):
    x = torch.rand(5, 3, 32, 32) * 2 - 1
    whole = encoder.encode_image(x)
    monkeypatch.setattr(encoders, "ENCODE_BATCH", 2)
    assert torch.allclose(encoder.encode_image(x), whole, atol=1e-5)


def test_text_cache_returns_identical_results(tiny_clip_dir):
    enc = ClipEncoder.load(str(tiny_clip_dir), device="cpu")
    first = enc.encode_text(["a red rose", "a daisy"])
    calls = []
    original = enc.model.encode_text
    enc.model.encode_text = lambda *a, **k: calls.append(1) or original(*a, **k)
    again = enc.encode_text(["a daisy", "a red rose"])
    assert calls == []                                  # both came from the cache
    assert torch.equal(again, first.flip(0))
    enc.clear_text_cache()
    alone = enc.encode_text(["a daisy"])[0]      # a batch of one: the same numbers to float rounding, not bit for bit
    assert calls == [1] and torch.allclose(alone, first[1], atol=1e-6), "cleared: encoded again"
    fresh = ClipEncoder.load(str(tiny_clip_dir), device="cpu").encode_text(["a red rose"])
    assert torch.allclose(fresh[0], first[0], atol=1e-6)


def test_text_cache_is_bounded(tiny_clip_dir, monkeypatch):
    monkeypatch.setattr(encoders, "TEXT_CACHE_SIZE", 4)
    enc = ClipEncoder.load(str(tiny_clip_dir), device="cpu")
    prompts = [f"flower number {i}" for i in range(10)]
    emb = enc.encode_text(prompts)
    assert emb.shape == (10, 32)
    assert len(enc._text_cache) <= 4
    assert list(enc._text_cache) == prompts[-4:]       # least recently used go first
    enc.encode_text([prompts[6]])
    enc.encode_text(["one more"])
    assert prompts[6] in enc._text_cache and prompts[7] not in enc._text_cache
