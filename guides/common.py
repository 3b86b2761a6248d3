"""What guides share: the error a guide raises for input it cannot handle."""

__all__ = ["GuideError"]


class GuideError(ValueError):
    """A guide cannot run on this input (e.g. a non-amortised guide asked about a batch of another
    size); the message is one line that says why and what to do instead."""
