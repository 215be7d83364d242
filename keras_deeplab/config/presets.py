"""Named overrides of the config defaults: `--config demo`, `voc_aug`, ..."""

from keras_deeplab.labels import (
    ADE20K_CLASSES,
    CITYSCAPES_CLASSES,
    PETS_CLASSES,
    SYNTHETIC_CLASSES,
    VOC_CLASSES,
)

# The demos train on small synthetic images in minutes on a 2-core CPU with
# no pretrained weights: AdamW from scratch, and BN momentum 0.99 because
# 0.9997 needs thousands of steps to warm its moving averages.
_SYNTHETIC_RECIPE = {
    "num_classes": len(SYNTHETIC_CLASSES),
    "class_names": SYNTHETIC_CLASSES,
    "dataset": "synthetic",
    "synthetic_image_size": 128,
    "synthetic_train_size": 2000,
    "synthetic_val_size": 100,
    "crop_size": 128,
    "min_scale": 0.75,
    "max_scale": 1.25,
    "batch_size": 8,
    "epochs": 11,
    "optimizer": "adamw",
    "learning_rate": 1e-3,
    "weight_decay": 1e-4,
    "bn_momentum": 0.99,
    "export_size": 128,
}
PRESETS = {
    # ASPP rates scaled to the 8x8 feature maps and a quarter-width
    # ResNet-50 (the same 50-layer dilated layout, ~16x fewer backbone
    # FLOPs).
    "demo": {
        **_SYNTHETIC_RECIPE,
        "atrous_rates": (2, 4, 6),
        "backbone_width": 16,
        "head_filters": 64,
    },
    # The demo on a phone-sized model: LR-ASPP on a dilated MobileNetV3-Large
    # (3.2 M parameters at full width), on the same synthetic data.
    "mobile": {
        **_SYNTHETIC_RECIPE,
        "architecture": "lraspp",
        "backbone": "mobilenet_v3_large",
    },
    "voc_aug": {
        "num_classes": len(VOC_CLASSES),
        "class_names": VOC_CLASSES,
        "dataset": "voc",
        "train_split": "train_aug",
        "val_split": "val",
        "backbone_weights": "imagenet",
        "crop_size": 513,
        "batch_size": 16,
        "epochs": 46,  # ~30K iterations of batch 16 over 10,582 images
    },
    "cityscapes": {
        "num_classes": len(CITYSCAPES_CLASSES),
        "class_names": CITYSCAPES_CLASSES,
        "dataset": "cityscapes",
        "backbone_weights": "imagenet",
        "crop_size": 769,
        "batch_size": 8,
        "learning_rate": 0.01,
    },
    "ade20k": {
        "num_classes": len(ADE20K_CLASSES),
        "class_names": ADE20K_CLASSES,
        "dataset": "ade20k",
        "train_split": "training",
        "val_split": "validation",
        "backbone_weights": "imagenet",
        "crop_size": 513,
        "learning_rate": 0.01,
    },
    "pets": {
        "num_classes": len(PETS_CLASSES),
        "class_names": PETS_CLASSES,
        "dataset": "tfds",
        "tfds_name": "oxford_iiit_pet",
        "val_split": "test",
        "backbone_weights": "imagenet",
        "crop_size": 321,
    },
}
