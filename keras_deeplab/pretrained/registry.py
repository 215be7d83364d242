"""The model zoo as data: every published checkpoint our models can hold.

Each entry was checked against its publisher's own source: torchvision's
`torchvision/models/segmentation/deeplabv3.py` and `lraspp.py` (URL, the
SHA-256 prefix in the file name, `meta["metrics"]`, `_file_size`; the full
SHA-256 and byte sizes are those projects re-hosting the files publish,
checked against both) and the
README of VainF/DeepLabV3Plus-Pytorch (file names, download links, mIoU,
training and validation protocol). Nothing here is downloaded at import.
"""

import dataclasses

from keras_deeplab.labels import CITYSCAPES_CLASSES, VOC_CLASSES

_TORCHVISION = "https://download.pytorch.org/models/"
_TORCHVISION_SOURCE = (
    "torchvision {module}: {weights}.COCO_WITH_VOC_LABELS_V1 meta['metrics']"
)
_TORCHVISION_EVALUATION = (
    "COCO val2017, the 20 Pascal VOC categories; shorter side resized to 520"
)
_TORCHVISION_LICENCE = (
    "BSD-3-Clause (torchvision); weights trained on COCO (CC BY 4.0 "
    "annotations)"
)
_VAINF_SOURCE = "VainF/DeepLabV3Plus-Pytorch README, Results table"
_VAINF_VOC = "Pascal VOC 2012 val; resized to 513, 513x513 center crop"
_VAINF_LICENCE = "MIT (VainF/DeepLabV3Plus-Pytorch)"


@dataclasses.dataclass(frozen=True)
class Preset:
    """One published checkpoint and what it takes to use it.

    Attributes:
        name: str. The short name `from_preset` takes.
        url: str. Where the publisher serves the file.
        file_name: str. The file's name (also its name on a mirror).
        sha256: str or None. The file's full SHA-256 (torchvision's file
            names carry its first 8 hex digits; the full digests are those
            re-hosting projects publish, each checked against that prefix);
            None where none is published.
        arch: str. `convert.ARCHS` entry the file converts with.
        output_stride: int. The stride the model runs at by default.
        class_names: tuple of str. What the logits mean, in order.
        dataset: str. What it was trained on.
        metric: str. The published result.
        evaluation: str. The dataset, split and protocol of that result.
        source: str. Where the result and the file are published.
        licence: str. Licence of the code and terms of the weights.
        size_bytes: int or None. The file's exact size (torchvision states
            it as `_file_size` in MiB, to three decimals).
    """

    name: str
    url: str
    file_name: str
    sha256: str | None
    arch: str
    output_stride: int
    class_names: tuple
    dataset: str
    metric: str
    evaluation: str
    source: str
    licence: str
    size_bytes: int | None

    @property
    def size_mb(self) -> float | None:
        return None if self.size_bytes is None else self.size_bytes / 2**20


def _torchvision(
    name, *, file_name, sha256, size, module, weights, arch, metric
):
    return Preset(
        name=name,
        url=_TORCHVISION + file_name,
        file_name=file_name,
        sha256=sha256,
        arch=arch,
        output_stride=(16 if "mobilenet" in arch else 8),
        class_names=VOC_CLASSES,
        dataset="COCO train2017, relabelled with the 20 VOC categories",
        metric=metric,
        evaluation=_TORCHVISION_EVALUATION,
        source=_TORCHVISION_SOURCE.format(module=module, weights=weights),
        licence=_TORCHVISION_LICENCE,
        size_bytes=size,
    )


def _vainf(name, *, file_name, url, arch, metric, classes, evaluation):
    return Preset(
        name=name,
        url=url,
        file_name=file_name,
        sha256=None,  # VainF publishes none
        arch=arch,
        output_stride=16,  # VainF trained and evaluated every model at 16
        class_names=classes,
        dataset=(
            "Pascal VOC 2012 + SBD (train_aug, 10,582 images)"
            if classes == VOC_CLASSES
            else "Cityscapes train (fine, 19 classes)"
        ),
        metric=metric,
        evaluation=evaluation,
        source=_VAINF_SOURCE,
        licence=_VAINF_LICENCE,
        size_bytes=None,
    )


def _dropbox(key, file_name):
    # dl=1 asks Dropbox for the file itself instead of its web page.
    return f"https://www.dropbox.com/s/{key}/{file_name}?dl=1"


MODEL_PRESETS = {
    preset.name: preset
    for preset in (
        _torchvision(
            "deeplabv3_resnet50_coco",
            file_name="deeplabv3_resnet50_coco-cd0a2569.pth",
            sha256=(
                "cd0a25694c4a0f7106b38f4938bf90a8"
                "74f2f241cc410b8f63c7024399538f06"
            ),
            size=168_312_152,
            module="segmentation/deeplabv3.py",
            weights="DeepLabV3_ResNet50_Weights",
            arch="deeplabv3_resnet50",
            metric="66.4 mIoU, 92.4 pixel accuracy",
        ),
        _torchvision(
            "deeplabv3_resnet101_coco",
            file_name="deeplabv3_resnet101_coco-586e9e4e.pth",
            sha256=(
                "586e9e4e203fcbf17e1ad45533d8d33a"
                "b133fc762bf03101c5dd743995c08c0d"
            ),
            size=244_545_539,
            module="segmentation/deeplabv3.py",
            weights="DeepLabV3_ResNet101_Weights",
            arch="deeplabv3_resnet101",
            metric="67.4 mIoU, 92.4 pixel accuracy",
        ),
        _torchvision(
            "deeplabv3_mobilenet_v3_large_coco",
            file_name="deeplabv3_mobilenet_v3_large-fc3c493d.pth",
            sha256=(
                "fc3c493d68e89cc31ef488c803d5d7dd"
                "2f3190fb570598faa49fef69be8e5e70"
            ),
            size=44_356_159,
            module="segmentation/deeplabv3.py",
            weights="DeepLabV3_MobileNet_V3_Large_Weights",
            arch="deeplabv3_mobilenet_v3_large",
            metric="60.3 mIoU, 91.2 pixel accuracy",
        ),
        _torchvision(
            "lraspp_mobilenet_v3_large_coco",
            file_name="lraspp_mobilenet_v3_large-d234d4ea.pth",
            sha256=(
                "d234d4eae9d55d5f76de18b77cf0dc62"
                "c66fe5c5482758209d00f950c92bb280"
            ),
            size=13_097_061,
            module="segmentation/lraspp.py",
            weights="LRASPP_MobileNet_V3_Large_Weights",
            arch="lraspp_mobilenet_v3_large",
            metric="57.9 mIoU, 91.2 pixel accuracy",
        ),
        _vainf(
            "deeplabv3_resnet50_voc",
            file_name="best_deeplabv3_resnet50_voc_os16.pth",
            url=_dropbox(
                "3eag5ojccwiexkq", "best_deeplabv3_resnet50_voc_os16.pth"
            ),
            arch="deeplabv3_resnet50",
            metric="76.9 mIoU",
            classes=VOC_CLASSES,
            evaluation=_VAINF_VOC,
        ),
        _vainf(
            "deeplabv3_resnet101_voc",
            file_name="best_deeplabv3_resnet101_voc_os16.pth",
            url=_dropbox(
                "vtenndnsrnh4068", "best_deeplabv3_resnet101_voc_os16.pth"
            ),
            arch="deeplabv3_resnet101",
            metric="77.3 mIoU",
            classes=VOC_CLASSES,
            evaluation=_VAINF_VOC,
        ),
        _vainf(
            "deeplabv3plus_resnet50_voc",
            file_name="best_deeplabv3plus_resnet50_voc_os16.pth",
            url=_dropbox(
                "dgxyd3jkyz24voa", "best_deeplabv3plus_resnet50_voc_os16.pth"
            ),
            arch="deeplabv3plus_resnet50",
            metric="77.2 mIoU",
            classes=VOC_CLASSES,
            evaluation=_VAINF_VOC,
        ),
        _vainf(
            "deeplabv3plus_resnet101_voc",
            file_name="best_deeplabv3plus_resnet101_voc_os16.pth",
            url=_dropbox(
                "bm3hxe7wmakaqc5", "best_deeplabv3plus_resnet101_voc_os16.pth"
            ),
            arch="deeplabv3plus_resnet101",
            metric="78.3 mIoU",
            classes=VOC_CLASSES,
            evaluation=_VAINF_VOC,
        ),
        _vainf(
            "deeplabv3plus_resnet101_cityscapes",
            file_name="best_deeplabv3plus_resnet101_cityscapes_os16.pth",
            # The README links this one on Google Drive; this is the direct
            # download form of that link (large files may first answer with
            # a confirmation page, which the reader refuses: download it in
            # a browser into the cache folder `from_preset` names).
            url=(
                "https://drive.usercontent.google.com/download?id="
                "1t7TC8mxQaFECt4jutdq_NMnWxdm6B-Nb&export=download&confirm=t"
            ),
            arch="deeplabv3plus_resnet101",
            metric="76.2 mIoU",
            classes=CITYSCAPES_CLASSES,
            evaluation="Cityscapes val at 1024x2048 (full images)",
        ),
    )
}
