"""Rich progress columns used by the command line."""

from __future__ import annotations

from rich.progress import ProgressColumn, Task
from rich.text import Text


class FilesPerSecond(ProgressColumn):
    """Throughput in files per second."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("-- files/s" if speed is None else f"{speed:.1f} files/s")
