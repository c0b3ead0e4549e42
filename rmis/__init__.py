"""rmis: the reproducible evaluation harness for foundation models of industrial signals.

Data flows one way: files -> windows -> encoder -> per-file embedding -> :mod:`rmis.protocol`
-> result file -> leaderboard.
"""

__version__ = "0.1.0"

#: Version of the scoring protocol implemented by :mod:`rmis.protocol` (PROTOCOL.md). Bumped
#: whenever a change could alter a published score.
PROTOCOL_VERSION = "1"
