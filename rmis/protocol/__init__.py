"""The RMIS evaluation protocol as pure functions over arrays (no file I/O)."""
