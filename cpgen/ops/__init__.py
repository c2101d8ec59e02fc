"""Pure array operations: explicit parameters in, arrays out; no I/O, no random numbers."""

from __future__ import annotations

import threading

_THREAD = threading.local()


def opencv_own_kernels() -> None:
    """Make OpenCV use its own kernels in this thread, not Intel IPP's (a per-thread switch).

    opencv-python's x86 wheels hand ``warpAffine`` (and may hand other filters) to IPP where
    the CPU suits it (AVX-512 machines, measured): IPP rounds halfway coordinates up rather than
    to even and interpolates otherwise, so the same job gave other bytes there, and the torch
    paths, which reproduce OpenCV's own kernels (:mod:`cpgen.ops.warp_coords`), no longer
    matched them. The switch stays off in that thread afterwards (a caller's own OpenCV calls
    there run without IPP too).
    """
    if not getattr(_THREAD, "own_kernels", False):
        import cv2

        cv2.ipp.setUseIPP(False)
        _THREAD.own_kernels = True
