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

__all__ = [
    "deeplabv3",
    "import_torchvision",
    "torch",
    "torch_logits",
    "vainf_deeplabv3plus",
]


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


def vainf_deeplabv3plus(arch, *, num_classes=21, output_stride=16):
    """VainF's DeepLabV3+ (DeepLabV3Plus-Pytorch, MIT) with random weights
    and random BN, eval mode, as its state dicts are laid out.

    VainF builds it from torchvision parts: a ResNet whose layer1 ("low
    level") and layer4 ("out") an IntermediateLayerGetter returns, and
    torchvision's ASPP module (its own differs only in dropout, which eval
    mode skips). Its DeepLabHeadV3Plus is the ten lines below: project
    layer1 to 48 channels, upsample the ASPP output to that size,
    concatenate (low level first), one 3x3 conv + BN + ReLU, a 1x1 conv.
    """
    torchvision = import_torchvision()
    nn, functional = torch.nn, torch.nn.functional
    from torchvision.models._utils import IntermediateLayerGetter
    from torchvision.models.segmentation.deeplabv3 import ASPP

    dilation = [False, output_stride == 8, True]
    rates = [6, 12, 18] if output_stride == 16 else [12, 24, 36]
    torch.manual_seed(0)
    resnet = getattr(torchvision.models, arch.removeprefix("deeplabv3plus_"))(
        weights=None, replace_stride_with_dilation=dilation
    )

    class Head(nn.Module):
        def __init__(self):
            super().__init__()
            self.project = nn.Sequential(
                nn.Conv2d(256, 48, 1, bias=False),
                nn.BatchNorm2d(48),
                nn.ReLU(inplace=True),
            )
            self.aspp = ASPP(2048, rates)
            self.classifier = nn.Sequential(
                nn.Conv2d(304, 256, 3, padding=1, bias=False),
                nn.BatchNorm2d(256),
                nn.ReLU(inplace=True),
                nn.Conv2d(256, num_classes, 1),
            )

        def forward(self, features):
            low_level = self.project(features["low_level"])
            out = functional.interpolate(
                self.aspp(features["out"]),
                size=low_level.shape[2:],
                mode="bilinear",
                align_corners=False,
            )
            return self.classifier(torch.cat([low_level, out], dim=1))

    class DeepLabV3Plus(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = IntermediateLayerGetter(
                resnet, {"layer4": "out", "layer1": "low_level"}
            )
            self.classifier = Head()

        def forward(self, images):
            logits = self.classifier(self.backbone(images))
            return {
                "out": functional.interpolate(
                    logits,
                    size=images.shape[-2:],
                    mode="bilinear",
                    align_corners=False,
                )
            }

    return randomize_batchnorm(DeepLabV3Plus())
