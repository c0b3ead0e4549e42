"""The README's adapter example works as written."""

from __future__ import annotations

import re
from pathlib import Path

from rmis.checks import check_encoder
from rmis.encoders import load_encoder

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_adapter_example_runs_and_passes_check_model() -> None:
    text = README.read_text()
    section = text[text.index("## Add your encoder") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert len(code.splitlines()) <= 35
    exec(compile(code, "README:my_encoder.py", "exec"), {"__name__": "my_encoder"})
    enc = load_encoder("my-encoder", width=8)
    rows = check_encoder(enc, seconds=0.5)
    assert rows and all(r.ok for r in rows), [r for r in rows if not r.ok]
    assert rows[0].detail == "(3, 8)"
