"""The package name every registered Keras class of ours is saved under
("keras_deeplab>ClassName"): files written by any release name it, so it
never changes."""

PACKAGE = "keras_deeplab"
