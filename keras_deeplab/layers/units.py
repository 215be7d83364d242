"""How every builder names the layers of a unit (a convolution and the
BatchNormalization after it); the converters map checkpoints onto these
names."""


def conv_name(unit: str) -> str:
    return f"{unit}_conv"


def bn_name(unit: str) -> str:
    return f"{unit}_bn"
