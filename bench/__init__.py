"""Benchmarks of the platform itself (`prunehive bench`): ratios measured side by side in one run."""
