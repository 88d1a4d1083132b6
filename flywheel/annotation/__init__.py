"""Annotate Anyone: parsing, the AI annotator, human labelling backends, iterations and captions."""
