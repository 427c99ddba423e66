"""The repository's promises to a new user: the README's commands, CI, and notebook headers."""

import json
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
URL = re.search(
    r'^Repository = "(.+)"$', (ROOT / "pyproject.toml").read_text(), re.M
).group(1)
SLUG = URL.removeprefix("https://github.com/")
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def readme_commands():
    return re.findall(r"```bash\n(.+?)\n```", (ROOT / "README.md").read_text())


def test_readme_gives_the_two_fresh_machine_commands():
    main_job, tests = readme_commands()[:2]
    assert (
        main_job.startswith("pip install torch==")
        and "python -m minicompress study" in main_job
    )
    assert "pytest" in tests and "--nbval" in tests and "notebooks" in tests


def test_the_test_command_compares_notebook_outputs_after_sanitizing():
    # Lax mode only executes the cells; the strict mode with the sanitizers compares every
    # code cell's text output with the committed one (tests/test_notebook_outputs.py shows
    # it failing on a stale notebook).
    tests = readme_commands()[1]
    assert "--nbval-lax" not in tests.split()
    assert "--nbval --nbval-sanitize-with notebooks/sanitize.cfg" in tests
    assert (ROOT / "notebooks" / "sanitize.cfg").is_file()


def test_ci_runs_the_readmes_test_command():
    pytest_command = readme_commands()[1].split("&& ")[-1]
    ci = (ROOT / ".ci" / "run").read_text()
    assert pytest_command in ci
    assert "pip install --quiet torch==2.14.1 torchvision==0.29.1" in ci


def test_there_are_notebooks():
    assert any(p.name.startswith("00_") for p in NOTEBOOKS)


def test_every_notebook_has_badges_install_cell_parameters_and_asserts():
    for path in NOTEBOOKS:
        cells = json.loads(path.read_text())["cells"]
        first_md = "".join(cells[0]["source"])
        assert (
            f"colab.research.google.com/github/{SLUG}/blob/main/notebooks/{path.name}"
            in first_md
        ), path.name
        assert (
            f"mybinder.org/v2/gh/{SLUG}/main?labpath=notebooks%2F{path.name}"
            in first_md
        ), path.name
        code = ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
        assert "google.colab" in code[0] and f"git+{URL}" in code[0], (
            f"{path.name}: install cell"
        )
        assert any(re.search(r"^DATASET = ", c, re.M) for c in code), (
            f"{path.name}: parameters cell"
        )
        assert any("assert " in c for c in code), (
            f"{path.name}: no assert checks its claims"
        )
        assert all(
            c.get("outputs") is not None for c in cells if c["cell_type"] == "code"
        )
        assert any(c.get("outputs") for c in cells if c["cell_type"] == "code"), (
            f"{path.name}: committed without outputs"
        )
        errors = [
            o
            for c in cells
            if c["cell_type"] == "code"
            for o in c["outputs"]
            if o["output_type"] == "error"
        ]
        assert not errors, f"{path.name}: a committed output is an error"


def test_readme_links_every_notebook():
    readme = (ROOT / "README.md").read_text()
    for path in NOTEBOOKS:
        assert f"notebooks/{path.name}" in readme, path.name
