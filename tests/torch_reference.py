"""torchvision's own DeepLabV3, the independent reference for conversion.

torchvision comes from PyPI built against a CUDA torch and is installed with
`--no-deps` beside the CPU torch (README, test command). Its compiled ops
(nms, roi_align, ...) then fail to load, and `import torchvision` stops in
`_meta_registrations`, which registers fake kernels for `torchvision::nms`
and `torchvision::qnms` whether or not the ops loaded. The segmentation
builders are pure Python and use none of those ops, so when (and only when)
that import fails, the two operator schemas are declared here and the import
is retried. torchvision itself is not modified.
"""

import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

# Kept alive for the session: a torch.library.Library drops its definitions
# when it is garbage collected.
_DECLARED_OPS = []
_MISSING_OP = "operator torchvision::nms does not exist"
TORCH_MEAN_RGB = np.array((0.485, 0.456, 0.406), np.float32)
TORCH_STD_RGB = np.array((0.229, 0.224, 0.225), np.float32)


def import_torchvision():
    """torchvision, importable beside a CPU torch built for another CUDA."""
    try:
        import torchvision
    except RuntimeError as err:
        if _MISSING_OP not in str(err):
            raise
        for name in [
            n for n in sys.modules if n.split(".")[0] == "torchvision"
        ]:
            del sys.modules[name]
        library = torch.library.Library("torchvision", "DEF")
        for op in ("nms", "qnms"):
            library.define(
                f"{op}(Tensor dets, Tensor scores, float iou_threshold) "
                "-> Tensor"
            )
        _DECLARED_OPS.append(library)
        import torchvision
    return torchvision


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
    """torchvision's DeepLabV3 with random weights and BN, in eval mode.

    Output stride 8 is torchvision's own builder; 16 assembles the same
    parts with `replace_stride_with_dilation=[False, False, True]` and ASPP
    rates (6, 12, 18), as VainF's OS16 models are built.
    """
    torchvision = import_torchvision()
    segmentation = torchvision.models.segmentation
    torch.manual_seed(0)
    if output_stride == 8:
        model = getattr(segmentation, arch)(
            weights=None,
            weights_backbone=None,
            num_classes=num_classes,
            aux_loss=aux_loss,
        )
        return randomize_batchnorm(model)
    resnet = getattr(torchvision.models, arch.removeprefix("deeplabv3_"))(
        weights=None, replace_stride_with_dilation=[False, False, True]
    )
    layers = {"layer4": "out", **({"layer3": "aux"} if aux_loss else {})}
    backbone = torchvision.models._utils.IntermediateLayerGetter(resnet, layers)
    model = segmentation.deeplabv3.DeepLabV3(
        backbone,
        segmentation.deeplabv3.DeepLabHead(2048, num_classes, (6, 12, 18)),
        segmentation.fcn.FCNHead(1024, num_classes) if aux_loss else None,
    )
    return randomize_batchnorm(model)


def torch_logits(model, images):
    """{"out", "aux"} logits (b, h, w, c) of RGB [0, 255] images."""
    normalised = (np.asarray(images, np.float32) / 255 - TORCH_MEAN_RGB) / (
        TORCH_STD_RGB
    )
    batch = torch.from_numpy(normalised.transpose(0, 3, 1, 2).copy())
    with torch.no_grad():
        outputs = model(batch)
    return {
        name: value.numpy().transpose(0, 2, 3, 1)
        for name, value in outputs.items()
    }
