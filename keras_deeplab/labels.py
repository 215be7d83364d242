"""Label conventions shared by data, training and evaluation, and the class
names of the datasets the project reads."""

# Pixels labelled 255 (VOC borders, Cityscapes void, padding) are left out of
# the loss and of every metric.
IGNORE_INDEX = 255
# Class ids are stored in uint8 masks where 255 means "ignore".
MAX_CLASSES = IGNORE_INDEX

SYNTHETIC_CLASSES = ("background", "disc", "square", "triangle", "ring")
# Pascal VOC 2012 (and torchvision's COCO_WITH_VOC_LABELS weights).
VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus",
    "car", "cat", "chair", "cow", "diningtable", "dog", "horse", "motorbike",
    "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip
# The 19 evaluated classes of Cityscapes, in train-id order.
CITYSCAPES_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
    "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car",
    "truck", "bus", "train", "motorcycle", "bicycle",
)  # fmt: skip
# Their colours in cityscapesScripts' labels.py (the `_color` masks).
CITYSCAPES_COLORS = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156),
    (190, 153, 153), (153, 153, 153), (250, 170, 30), (220, 220, 0),
    (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
    (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100),
    (0, 0, 230), (119, 11, 32),
)  # fmt: skip
# ADE20K SceneParsing's 150 classes (objectInfo150), stored 1..150.
ADE20K_CLASSES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed",
    "windowpane", "grass", "cabinet", "sidewalk", "person", "earth", "door",
    "table", "mountain", "plant", "curtain", "chair", "car", "water",
    "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field",
    "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp",
    "bathtub", "railing", "cushion", "base", "box", "column", "signboard",
    "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace",
    "refrigerator", "grandstand", "path", "stairs", "runway", "case",
    "pool table", "pillow", "screen door", "stairway", "river", "bridge",
    "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill",
    "bench", "countertop", "stove", "palm", "kitchen island", "computer",
    "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus", "towel",
    "light", "truck", "tower", "chandelier", "awning", "streetlight",
    "booth", "television receiver", "airplane", "dirt track", "apparel",
    "pole", "land", "bannister", "escalator", "ottoman", "bottle", "buffet",
    "poster", "stage", "van", "ship", "fountain", "conveyer belt", "canopy",
    "washer", "plaything", "swimming pool", "stool", "barrel", "basket",
    "waterfall", "tent", "bag", "minibike", "cradle", "oven", "ball", "food",
    "step", "tank", "trade name", "microwave", "pot", "animal", "bicycle",
    "lake", "dishwasher", "screen", "blanket", "sculpture", "hood", "sconce",
    "vase", "traffic light", "tray", "ashcan", "fan", "pier", "crt screen",
    "plate", "monitor", "bulletin board", "shower", "radiator", "glass",
    "clock", "flag",
)  # fmt: skip
# Oxford-IIIT Pet trimaps: stored 1 (pet), 2 (background), 3 (border).
PETS_CLASSES = ("pet", "background", "border")


def default_class_names(num_classes: int) -> tuple:
    """("class_0", "class_1", ...): the names of a model trained without
    any."""
    return tuple(f"class_{index}" for index in range(num_classes))


def voc_palette(num_classes: int = 256) -> tuple:
    """The Pascal VOC colour map: one (r, g, b) per class, class 0 black.

    Each class id's bits are spread over the high bits of R, G and B, which
    is what VOC-style palette PNGs store.
    """
    palette = []
    for class_id in range(num_classes):
        value, colour = class_id, [0, 0, 0]
        for shift in range(7, -1, -1):
            for channel in range(3):
                colour[channel] |= ((value >> channel) & 1) << shift
            value >>= 3
        palette.append(tuple(colour))
    return tuple(palette)
