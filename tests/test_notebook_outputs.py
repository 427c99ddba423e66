"""The suite's notebook check: the README's nbval flags fail a notebook whose committed output is stale.

A tiny notebook is written with committed outputs, then run by nbval in a subprocess with exactly
the flags of the README's test command. Its three cells cover the three cases: a committed
output that differs from a fresh run only in numbers and blanks (another machine, another
seed) must pass; so must a cell marked `# NBVAL_IGNORE_OUTPUT`; a committed output with a word
the code no longer prints (a renamed function, a changed table) must fail.
"""

import os
import re
import shlex
import subprocess
import sys

import nbformat

from test_repository import ROOT, readme_commands

# (code, what an earlier run committed, what nbval must say)
CELLS = [
    (
        'print(f"accuracy {97.5:.1f} %,   {61706:,} parameters")',
        "accuracy 12.0 %, 5,678 parameters\n",  # other numbers and column widths
        "PASSED",
    ),
    (
        "# NBVAL_IGNORE_OUTPUT\nimport platform\nprint(platform.python_version())",
        "3.0.0\n",  # another machine
        "PASSED",
    ),
    (
        'print(f"accuracy {97.5:.1f} %, {61706:,} parameters")',
        "accuracy 12.0 %, 5,678 weights\n",  # made by code that printed "weights"
        "FAILED",
    ),
]


def nbval_flags():
    """The nbval options of the README's test command, with paths made absolute."""
    words = shlex.split(readme_commands()[1].split("&& ")[-1])
    flags = []
    for i, word in enumerate(words):
        if word.startswith("--nbval"):
            flags.append(word)
            if word == "--nbval-sanitize-with":
                flags.append(str(ROOT / words[i + 1]))
    return flags


def test_the_readme_check_masks_numbers_and_fails_a_stale_output(tmp_path):
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    for count, (source, committed, _) in enumerate(CELLS, start=1):
        cell = nbformat.v4.new_code_cell(source, execution_count=count)
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=committed)]
        notebook.cells.append(cell)
    nbformat.write(notebook, tmp_path / "stale.ipynb")
    flags = nbval_flags()
    assert "--nbval" in flags and "--nbval-lax" not in flags
    # A clean environment for the inner pytest (not an xdist worker of this run), rooted in
    # tmp_path so that it reads none of the repository's configuration.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA"]
        + ["--rootdir", str(tmp_path), *flags, "stale.ipynb"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    report = result.stdout + result.stderr
    outcomes = re.findall(r"^(PASSED|FAILED) stale\.ipynb::Cell (\d)", report, re.M)
    assert sorted(outcomes, key=lambda o: o[1]) == [
        (expected, str(i)) for i, (_, _, expected) in enumerate(CELLS)
    ], report
    assert result.returncode == 1, report
    # nbval prints both texts, so the reader sees what went stale.
    assert "N_weights" in report and "N_parameters" in report, report
