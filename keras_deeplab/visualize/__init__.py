"""Pictures of segmentations: colour masks, overlays and legends (`masks`,
numpy and Pillow only) and matplotlib figures (`figures`: prediction grids,
training curves, per-class bars, confusion matrices)."""
