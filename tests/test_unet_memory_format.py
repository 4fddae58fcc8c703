"""Every convolution of the UNet gets its input in its weights' memory format, so none copies its
weights on each call (issue 15: the transformer blocks handed channels_last views to the next
convolution, which then copied its NCHW weights every step: 6-17% of a CPU step)."""
import pytest
import torch

from models.loading import load_checkpoint
from models.tiny import tiny_sd15_spec, tiny_sdxl_spec, write_tiny_checkpoint

SPECS = {"sdxl": tiny_sdxl_spec(), "sd15": tiny_sd15_spec()}


def _inputs(unet, generator):
    cfg = unet.config
    x = torch.randn(2, cfg.in_channels, 16, 16, generator=generator)
    context = torch.randn(2, 11, cfg.context_dim, generator=generator)
    y = torch.randn(2, cfg.adm_in_channels, generator=generator) if cfg.adm_in_channels else None
    return x, torch.tensor([17.0, 803.0]), context, y


def _weight_format(conv: torch.nn.Conv2d) -> torch.memory_format:
    weight = conv.weight
    return torch.channels_last if not weight.is_contiguous() else torch.contiguous_format


@pytest.mark.parametrize("family", SPECS)
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last], ids=["nchw", "nhwc"])
def test_convolution_inputs_match_their_weights_format(tmp_path, family, memory_format):
    unet = load_checkpoint(write_tiny_checkpoint(tmp_path / "unet.safetensors", SPECS[family], seed=1)).unet
    x, t, context, y = _inputs(unet, torch.Generator().manual_seed(0))
    with torch.inference_mode():
        reference = unet(x, t, context, y)
    unet = unet.to(memory_format=memory_format)
    mismatched = []

    def check(conv, args):
        if conv.weight.shape[-1] > 1 and not args[0].is_contiguous(memory_format=_weight_format(conv)):
            mismatched.append(tuple(args[0].shape))

    convs = [m for m in unet.modules() if isinstance(m, torch.nn.Conv2d)]
    hooks = [conv.register_forward_pre_hook(check) for conv in convs]
    with torch.inference_mode():
        out = unet(x.contiguous(memory_format=memory_format), t, context, y)
    for hook in hooks:
        hook.remove()
    assert not mismatched, f"convolution inputs not in their weights' format: {mismatched}"
    torch.testing.assert_close(out, reference, rtol=1e-4, atol=1e-5)
