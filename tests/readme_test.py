"""README.md's set-up and test commands are exactly what CI runs."""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_commands():
  readme = (ROOT / "README.md").read_text()
  block = re.search(r"```bash\n(.*?)```", readme, flags=re.S).group(1)
  commands = [line for line in block.splitlines() if line and not line.startswith("#")]
  assert len(commands) == 3, "README opens with three commands: set-up, tests, main job"
  ci = (ROOT / ".ci" / "run").read_text()
  setup, tests, _ = commands
  assert setup in ci and tests in ci
