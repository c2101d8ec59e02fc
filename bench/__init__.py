"""Benchmarks (``make bench``): scripts that print figures; nothing here asserts a speed."""

from cpgen.cli import one_blas_thread

# as the console script does, before numpy is imported: in-process runs then fork their workers
# (the default backend), as a user's command does, where OpenBLAS's threads would make it loky
one_blas_thread()
