"""cpgen: offline dataset generation for computer vision (Simple Copy-Paste, CutMix)."""

__version__ = "0.1.0"
