"""The README's Python quick start runs as printed, in a fresh process and folder."""

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def quick_start() -> str:
    """The README's first Python block: the complete example (the later ones are sketches)."""
    blocks = re.findall(r"^```python\n(.*?)^```$", README.read_text(), re.S | re.M)
    assert blocks, "README.md has no ```python block"
    return blocks[0]


def test_the_readme_quick_start_runs_as_printed(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", quick_start()],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    # It printed the keys of the first query's ten nearest codes, the query's own key first.
    assert done.stdout.startswith("['0.png'"), done.stdout
    assert (tmp_path / "codes.milan").is_dir()
