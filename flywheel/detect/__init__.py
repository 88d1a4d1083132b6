"""Person and face detectors. Defaults need no downloaded weights (OpenCV ships them)."""
