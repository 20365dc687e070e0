"""The mlqueue benchmark harness: `python -m bench` (or `make bench`). See docs/benchmarks.md."""
