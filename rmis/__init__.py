"""rmis: the reproducible evaluation harness for foundation models of industrial signals.

Data flows one way: files -> windows -> encoder -> per-file embedding -> :mod:`rmis.protocol`
-> result file -> leaderboard.
"""

__version__ = "0.1.0"

#: Version of the scoring protocol implemented by :mod:`rmis.protocol` (PROTOCOL.md). Bumped
#: whenever a change could alter a published score.
PROTOCOL_VERSION = "1"

#: Names exported from the package root, imported on first use so that ``import rmis`` stays
#: light (no torch): ``rmis.load_encoder("ced-tiny")``, ``rmis.list_encoders("ced-*")``.
_LAZY = {
    "load_encoder": "rmis.encoders",
    "list_encoders": "rmis.encoders",
    "get_encoder_info": "rmis.encoders",
    "Encoder": "rmis.encoders",
    "EncoderInfo": "rmis.encoders",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'rmis' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = ["PROTOCOL_VERSION", "__version__", *_LAZY]
