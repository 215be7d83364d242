"""torchvision's own DeepLabV3, the independent reference for conversion.

torchvision is imported through `benchmarks.peers.import_torchvision`, which
works around its wheel's compiled ops failing to load beside the CPU torch
(see that module and docs/development.md).
"""

import pytest

torch = pytest.importorskip("torch")

from benchmarks.peers import (  # noqa: E402 - after the torch skip
    import_torchvision,
    normalised_nchw,
    torchvision_deeplabv3,
)

__all__ = ["deeplabv3", "import_torchvision", "torch", "torch_logits"]


def randomize_batchnorm(model, seed=0):
    """Random BN statistics and affine parameters: no BN is an identity."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                size = module.num_features
                module.weight.copy_(torch.rand(size, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(size, generator=generator) * 0.1)
                module.running_mean.copy_(
                    torch.randn(size, generator=generator) * 0.1
                )
                module.running_var.copy_(
                    torch.rand(size, generator=generator) + 0.5
                )
    return model.eval()


def deeplabv3(arch, *, num_classes=21, aux_loss=True, output_stride=8):
    """torchvision's DeepLabV3 with random weights and random BN, eval mode."""
    torch.manual_seed(0)
    model = torchvision_deeplabv3(
        arch,
        num_classes=num_classes,
        aux_loss=aux_loss,
        output_stride=output_stride,
    )
    return randomize_batchnorm(model)


def torch_logits(model, images):
    """{"out", "aux"} logits (b, h, w, c) of RGB [0, 255] images."""
    with torch.no_grad():
        outputs = model(normalised_nchw(images))
    return {
        name: value.numpy().transpose(0, 2, 3, 1)
        for name, value in outputs.items()
    }
