"""Encoder adapters, one module per family. Installed as ``rmis.models``."""
