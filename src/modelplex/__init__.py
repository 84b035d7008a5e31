"""modelplex: an AI backend orchestration layer."""

__version__ = "0.1.0"
