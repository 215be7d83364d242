"""Label conventions shared by data, training and evaluation."""

# Pixels labelled 255 (VOC borders, Cityscapes void, padding) are left out of
# the loss and of every metric.
IGNORE_INDEX = 255
