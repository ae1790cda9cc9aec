"""Fast-path choices per device: bf16 autocast on CUDA only, channels-last memory on CUDA only and
only for convolutional image towers. The choices are checked on CPU; the last test runs them on a GPU."""

from __future__ import annotations

import warnings

import pytest
import torch

from t2c_monitor.device import autocast, use_channels_last
from t2c_monitor.encoders import create_source_encoder

CPU, CUDA = torch.device("cpu"), torch.device("cuda")
TINY_TEXT = {"context_length": 16, "vocab_size": 100, "width": 32, "heads": 2, "layers": 1}


def cuda_autocast() -> torch.autocast:
    with warnings.catch_warnings():  # without a GPU torch warns that it disables CUDA autocast
        warnings.filterwarnings("ignore", message=".*CUDA is not available.*")
        return autocast(CUDA)


def test_cuda_gets_bf16_autocast_and_cpu_runs_in_float32() -> None:
    context = cuda_autocast()
    assert isinstance(context, torch.autocast)
    assert (context.device, context.fast_dtype) == ("cuda", torch.bfloat16)
    with autocast(CPU):
        assert not torch.is_autocast_enabled("cpu")
        assert (torch.ones(2, 3) @ torch.ones(3, 2)).dtype == torch.float32


@pytest.mark.parametrize(("name", "convolutional"), [("resnet10t", True), ("test_resnet", True), ("test_vit", False)])
def test_channels_last_only_for_convolutional_timm_models_on_cuda(name: str, convolutional: bool) -> None:
    import timm

    model = timm.create_model(name)
    assert use_channels_last(CUDA, model) is convolutional
    assert use_channels_last(torch.device("cuda:1"), model) is convolutional
    assert use_channels_last(CPU, model) is False


def test_channels_last_for_clip_resnet_towers_but_not_vit_towers() -> None:
    from open_clip.model import CLIP

    resnet = CLIP(32, {"image_size": 64, "layers": [1, 1, 1, 1], "width": 16}, TINY_TEXT)
    vit = CLIP(32, {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32}, TINY_TEXT)
    assert use_channels_last(CUDA, resnet.visual) and not use_channels_last(CPU, resnet.visual)
    assert not use_channels_last(CUDA, vit.visual)


def test_cpu_encoder_keeps_the_default_layout() -> None:
    encoder = create_source_encoder("timm:resnet10t", device="cpu")
    conv = next(m for m in encoder.model.modules() if isinstance(m, torch.nn.Conv2d) and m.in_channels > 1)
    assert conv.weight.is_contiguous() and not conv.weight.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_encoder_runs_channels_last_in_bf16_close_to_cpu() -> None:
    cpu = create_source_encoder("timm:resnet10t", device="cpu")
    gpu = create_source_encoder("timm:resnet10t", device="cuda")
    conv = next(m for m in gpu.model.modules() if isinstance(m, torch.nn.Conv2d) and m.in_channels > 1)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    pixels = torch.randn(4, 3, 176, 176, generator=torch.Generator().manual_seed(0))
    on_gpu, on_cpu = gpu.encode(pixels), cpu.encode(pixels)
    assert on_gpu.dtype == torch.float32 and on_gpu.device == CPU
    torch.testing.assert_close(on_gpu, on_cpu, atol=0.05, rtol=0.05)  # bf16 keeps about 3 significant digits
