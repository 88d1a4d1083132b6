"""The embedded synthetic human source (renderer with exact ground truth)."""
