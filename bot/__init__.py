"""Comment-to-DM automation for Instagram and Messenger that obeys Meta's messaging rules."""

__version__ = "0.1.0"
