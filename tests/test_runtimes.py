"""U-Net runtimes (clipdiff.runtimes): fp32 on ONNX Runtime and OpenVINO answers as the eager module does (eps within
1e-5, any batch, integer or fractional timesteps), the export is cached by the weights' hash, bf16 and impossible
choices are refused with a message that says what to do, and the runtime travels into every PNG's parameters."""
from __future__ import annotations

import pytest
import torch

from clipdiff import runtimes
from clipdiff.diffusion import load_diffusion
from clipdiff.runtimes import Runtime, RuntimeUnavailable, runtime_of, with_runtime

EXACT = 1e-5


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    """One export folder for the module: the ONNX and OpenVINO checks share one export, as the cache makes them."""
    return tmp_path_factory.mktemp("runtimes")


@pytest.fixture(scope="module")
def tiny_unet(tiny_unet_dir):
    model, _ = load_diffusion(tiny_unet_dir, "cpu")
    return model


def inputs(model, batch: int, seed: int = 0, fractional: bool = False):
    g = torch.Generator().manual_seed(seed)
    cfg = model.config
    x = torch.randn(batch, cfg.channels, cfg.image_size, cfg.image_size, generator=g)
    t = torch.rand(batch, generator=g) * 399 if fractional else torch.randint(0, 400, (batch,), generator=g)
    return x, t, torch.randn(batch, cfg.cond_dim, generator=g)


@pytest.mark.parametrize("name", ["onnx", "openvino"])
def test_fp32_runtimes_give_the_eager_eps_at_every_batch(name, tiny_unet, export_dir):
    pytest.importorskip(runtimes.PACKAGES[name][0])
    model = with_runtime(tiny_unet, name, "fp32", cache_dir=export_dir)
    assert runtime_of(model) == Runtime(name, "fp32") and runtime_of(model).exact
    for batch, fractional in ((1, False), (3, True), (8, False), (17, False)):
        x, t, cond = inputs(tiny_unet, batch, seed=batch, fractional=fractional)
        with torch.inference_mode():              # as the sampler calls it
            expected = tiny_unet(x, t, cond)
            got = model(x, t, cond)
        assert got.shape == expected.shape and got.dtype == torch.float32
        assert (got - expected).abs().max().item() < EXACT, (name, batch)


def test_a_runtime_drops_in_where_the_module_is_used(tiny_clip_dir, tiny_unet_dir, tmp_path):
    """The sampler reads config, the null embedding and the device from the model: the ONNX pipeline gives the
    eager pipeline's images, and says in each image's parameters which runtime made it."""
    pytest.importorskip("onnxruntime")
    from clipdiff.pipeline import ClipDiffusionPipeline, images_per_prompt
    from clipdiff.sampling import to_uint8

    eager = ClipDiffusionPipeline.load(tiny_unet_dir, clip=str(tiny_clip_dir), device="cpu", runtime="torch")
    onnx = ClipDiffusionPipeline(eager.encoder, with_runtime(eager.model, "onnx", cache_dir=tmp_path), eager.config,
                                 eager.model_id)
    jobs = images_per_prompt(["a red rose", "a daisy"], 2.0, 3, 2, negative="blue")
    expected = to_uint8(eager.generate(jobs, steps=6, sampler="dpmsolver-karras").images).astype(int)
    got = to_uint8(onnx.generate(jobs, steps=6, sampler="dpmsolver-karras").images).astype(int)
    assert abs(expected - got).max() <= 1
    assert onnx.model.num_parameters() == eager.model.num_parameters()
    assert eager.parameters_of(jobs[0], 6, "ddim")["runtime"] == "torch fp32"
    assert onnx.parameters_of(jobs[0], 6, "ddim")["runtime"] == "onnx fp32"


def test_the_pipeline_loads_the_default_runtime_and_refuses_an_impossible_one(tiny_clip_dir, tiny_unet_dir):
    from clipdiff.pipeline import ClipDiffusionPipeline

    pipe = ClipDiffusionPipeline.load(tiny_unet_dir, clip=str(tiny_clip_dir), device="cpu")
    assert runtime_of(pipe.model) == Runtime(runtimes.default_runtime("cpu"), "fp32")
    with pytest.raises(RuntimeUnavailable, match="ONNX Runtime has no bf16"):
        ClipDiffusionPipeline.load(tiny_unet_dir, clip=str(tiny_clip_dir), device="cpu", runtime="onnx",
                                   precision="bf16")


def test_app_flags_refuse_an_impossible_runtime_before_loading(capsys):
    import app

    with pytest.raises(SystemExit):
        app.parse_args(["--runtime", "onnx", "--precision", "bf16"])
    assert "--runtime openvino" in capsys.readouterr().err
    assert app.parse_args(["--device", "cpu"]).runtime == runtimes.default_runtime("cpu")


def test_the_export_is_cached_by_the_weights(tiny_unet, tmp_path):
    pytest.importorskip("onnx")
    first = runtimes.export_onnx(tiny_unet, tmp_path)
    stamp = first.stat().st_mtime_ns
    assert runtimes.export_onnx(tiny_unet, tmp_path) == first and first.stat().st_mtime_ns == stamp
    changed = type(tiny_unet)(tiny_unet.config)
    changed.load_state_dict(tiny_unet.state_dict())
    with torch.no_grad():
        changed.null_embedding.add_(1)
    assert runtimes.export_onnx(changed, tmp_path) != first
    assert not list(tmp_path.glob(".*.tmp")), "no half-written export left behind"


def test_eager_fp32_is_the_module_itself(tiny_unet):
    assert with_runtime(tiny_unet, "torch", "fp32") is tiny_unet
    assert runtime_of(tiny_unet) == Runtime("torch", "fp32")


def test_the_default_is_onnx_on_the_cpu_and_torch_elsewhere():
    assert runtimes.default_runtime("cpu") == ("onnx" if runtimes.importlib.util.find_spec("onnxruntime") else "torch")
    assert runtimes.default_runtime("cuda") == "torch"


@pytest.mark.parametrize("runtime, precision, says", [
    ("tensorrt", "fp32", "one of torch, onnx, openvino"),
    ("torch", "fp16", "one of fp32, bf16"),
    ("onnx", "bf16", "--runtime openvino"),
])
def test_impossible_choices_are_refused_with_what_to_do(runtime, precision, says, tiny_unet):
    with pytest.raises(RuntimeUnavailable, match=says):
        with_runtime(tiny_unet, runtime, precision)


def test_bf16_is_refused_where_the_cpu_lacks_it(monkeypatch, tiny_unet):
    monkeypatch.setattr(runtimes, "cpu_has_bf16", lambda: False)
    with pytest.raises(RuntimeUnavailable, match="no bf16 instructions"):
        with_runtime(tiny_unet, "torch", "bf16")


def test_a_missing_package_is_named(monkeypatch, tiny_unet):
    real = runtimes.importlib.util.find_spec
    monkeypatch.setattr(runtimes.importlib.util, "find_spec", lambda name: None if name == "openvino" else real(name))
    with pytest.raises(RuntimeUnavailable, match="requirements-openvino.txt"):
        with_runtime(tiny_unet, "openvino", "fp32")


def test_bf16_runs_close_to_fp32_and_says_it_is_not_exact(monkeypatch, tiny_unet):
    monkeypatch.setattr(runtimes, "cpu_has_bf16", lambda: True)    # emulated where the CPU lacks it: slow, same sums
    model = with_runtime(tiny_unet, "torch", "bf16")
    assert runtime_of(model) == Runtime("torch", "bf16") and not runtime_of(model).exact
    x, t, cond = inputs(tiny_unet, 4)
    with torch.inference_mode():
        diff = (model(x, t, cond) - tiny_unet(x, t, cond)).abs().max().item()
    assert 0 < diff < 0.5


@pytest.mark.parametrize("answer, says", [(float("nan"), "non-finite eps"), (1.0, "away from eager")])
def test_a_runtime_that_answers_nonsense_is_refused_at_load(monkeypatch, tiny_unet, answer, says, export_dir):
    """A runtime is checked against eager on one probe batch when it loads (OpenVINO bf16 answered NaN on one
    AVX-512 BF16 CPU): NaN or eps far from eager is refused, saying what to use instead, not sampled from."""
    pytest.importorskip("onnxruntime")
    monkeypatch.setattr(runtimes, "_onnxruntime", lambda path: lambda x, t, cond: torch.full_like(x, answer))
    with pytest.raises(RuntimeUnavailable, match=f"{says}.*use --precision fp32"):
        with_runtime(tiny_unet, "onnx", "fp32", cache_dir=export_dir)
