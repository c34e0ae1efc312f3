"""Evaluation metrics for generated talking-face videos (see each module)."""
