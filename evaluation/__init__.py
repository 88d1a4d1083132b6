"""Evaluation of trained model versions (semantic accuracy, attention alignment, image quality)."""
