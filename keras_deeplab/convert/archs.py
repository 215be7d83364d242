"""The checkpoint architectures `convert-torchvision --arch` accepts."""

# --arch -> (architecture, backbone); the V3+ names are VainF's, the rest
# torchvision's builders'.
ARCHS = {
    "deeplabv3_resnet50": ("deeplabv3", "resnet50"),
    "deeplabv3_resnet101": ("deeplabv3", "resnet101"),
    "deeplabv3plus_resnet50": ("deeplabv3plus", "resnet50"),
    "deeplabv3plus_resnet101": ("deeplabv3plus", "resnet101"),
    "deeplabv3_mobilenet_v3_large": ("deeplabv3", "mobilenet_v3_large"),
    "lraspp_mobilenet_v3_large": ("lraspp", "mobilenet_v3_large"),
}
