"""Evaluation metrics for generated talking-face videos (plain numpy, no JAX)."""
