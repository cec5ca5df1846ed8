"""rtrain's launcher: the light half that runs on the user's machine (never imports torch)."""

__version__ = "0.1.0"
