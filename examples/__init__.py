"""Runnable examples; each script is run directly (``python examples/<name>.py``)."""
