"""The checkpoint architectures `convert-torchvision --arch` accepts."""

# --arch -> (architecture, backbone); the V3+ names are VainF's.
ARCHS = {
    "deeplabv3_resnet50": ("deeplabv3", "resnet50"),
    "deeplabv3_resnet101": ("deeplabv3", "resnet101"),
    "deeplabv3plus_resnet50": ("deeplabv3plus", "resnet50"),
    "deeplabv3plus_resnet101": ("deeplabv3plus", "resnet101"),
}
