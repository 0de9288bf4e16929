"""Benchmark datasets: loading the field's layouts, reading masks, checking and fixing them."""

from __future__ import annotations

from imlscan.data.datasets import Dataset, Problem, Sample, check_dataset, load_dataset, read_mask, read_rgb

__all__ = ["Dataset", "Problem", "Sample", "check_dataset", "load_dataset", "read_mask", "read_rgb"]
