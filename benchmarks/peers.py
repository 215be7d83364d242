"""torchvision's DeepLabV3, the peer the benchmark times beside ours.

Also the test suite's reference implementation (tests/torch_reference.py).
Needs torch and torchvision (the `dev` extra and the README test command).

torchvision comes from PyPI built against a CUDA torch and is installed with
`--no-deps` beside the CPU torch. Its compiled ops (nms, roi_align, ...) then
fail to load, and `import torchvision` stops in `_meta_registrations`, which
registers fake kernels for `torchvision::nms` and `torchvision::qnms`
whether or not the ops loaded. The segmentation builders are pure Python,
so when (and only when) that import fails, the two operator schemas are
declared here and the import is retried. torchvision is not modified.
"""

import sys

# Kept alive for the process: a torch.library.Library drops its definitions
# when it is garbage collected.
_DECLARED_OPS = []
_MISSING_OP = "operator torchvision::nms does not exist"
TORCH_MEAN_RGB = (0.485, 0.456, 0.406)
TORCH_STD_RGB = (0.229, 0.224, 0.225)


def import_torchvision():
    """torchvision, importable beside a CPU torch built for another CUDA."""
    import torch

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


def torchvision_deeplabv3(
    arch="deeplabv3_resnet50",
    *,
    num_classes=21,
    aux_loss=False,
    output_stride=8,
):
    """torchvision's DeepLabV3 or LR-ASPP (random weights) in eval mode.

    ResNet at output stride 8 and every MobileNetV3 model are torchvision's
    own builders (the MobileNets are always at 16); ResNet at 16 assembles
    the same parts with `replace_stride_with_dilation=[False, False, True]`
    and ASPP rates (6, 12, 18), as VainF's OS16 models are built.
    """
    torchvision = import_torchvision()
    segmentation = torchvision.models.segmentation
    if "mobilenet" in arch:  # torchvision builds these at output stride 16
        options = {} if arch.startswith("lraspp") else {"aux_loss": aux_loss}
        return getattr(segmentation, arch)(
            weights=None,
            weights_backbone=None,
            num_classes=num_classes,
            **options,
        ).eval()
    if output_stride == 8:
        return getattr(segmentation, arch)(
            weights=None,
            weights_backbone=None,
            num_classes=num_classes,
            aux_loss=aux_loss,
        ).eval()
    resnet = getattr(torchvision.models, arch.removeprefix("deeplabv3_"))(
        weights=None, replace_stride_with_dilation=[False, False, True]
    )
    layers = {"layer4": "out", **({"layer3": "aux"} if aux_loss else {})}
    backbone = torchvision.models._utils.IntermediateLayerGetter(resnet, layers)
    return segmentation.deeplabv3.DeepLabV3(
        backbone,
        segmentation.deeplabv3.DeepLabHead(2048, num_classes, (6, 12, 18)),
        segmentation.fcn.FCNHead(1024, num_classes) if aux_loss else None,
    ).eval()


def normalised_nchw(images):
    """RGB [0, 255] (b, h, w, 3) -> torchvision's normalised (b, 3, h, w)."""
    import numpy as np
    import torch

    mean = np.asarray(TORCH_MEAN_RGB, np.float32)
    std = np.asarray(TORCH_STD_RGB, np.float32)
    normalised = (np.asarray(images, np.float32) / 255 - mean) / std
    return torch.from_numpy(normalised.transpose(0, 3, 1, 2).copy())


def export_torchvision_onnx(model, path, *, opset=17):
    """torch.onnx's TorchScript exporter, dynamic batch/height/width.

    The torch.export-based exporter (the default since torch 2.9) needs
    onnxscript; the TorchScript one is what most deployments still use.
    """
    import torch

    torch.onnx.export(
        model,
        (torch.zeros(1, 3, 65, 65),),
        str(path),
        dynamo=False,
        input_names=["images"],
        output_names=["out"],
        dynamic_axes={"images": {0: "batch", 2: "height", 3: "width"}},
        opset_version=opset,
    )
    return path
