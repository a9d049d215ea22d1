"""Solvers beyond masking (SparseGPT), the level database they fill, and the evaluator that reads it."""
