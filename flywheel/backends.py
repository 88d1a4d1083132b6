"""What every optional model backend raises when it cannot run here."""


class BackendUnavailable(RuntimeError):
    """An optional model backend cannot run here (no package or no local weights); the caller
    reports why, once, and computes nothing in its place."""
