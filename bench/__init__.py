"""Flywheel's benchmarks: `make bench` (python -m bench). See bench/harness.py."""
