"""The README's test command is the one CI runs."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command_verbatim():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)\n```", readme, flags=re.S)
    (command,) = [b for b in blocks if "python -m pytest" in b and "requirements-dev" in b]
    assert "chromium" in command  # a fresh machine gets the browser the tests need
    # ... and the real Fashion-MNIST, where the loader looks for Debian's copy
    from lossbarcode.datafiles import SYSTEM_COPIES

    folder, package = SYSTEM_COPIES["fashion_mnist"]
    assert f"apt-get install -y -qq chromium {package}" in command and str(folder) in command
    lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert command.strip() in [line.strip() for line in lines]


def test_the_readme_names_every_key_a_run_stores(tmp_path):
    """The README's table is the one description of a run's files: every key of every stage
    (JSON and arrays) of a real run is in its row."""
    from lossbarcode.choices import PRESETS
    from lossbarcode.experiment import ExperimentConfig, run_experiment
    from lossbarcode.store import ResultStore

    readme = (ROOT / "README.md").read_text()
    store = ResultStore(tmp_path)
    run_id = run_experiment(ExperimentConfig(**PRESETS["tiny"][1]), store).run_id
    for stage in ("minima", "paths", "result"):
        (row,) = [line for line in readme.splitlines() if line.startswith(f"| `{stage}.json`")]
        meta, arrays = store.load_stage(run_id, stage)
        missing = [key for key in [*meta, *arrays] if f"`{key}`" not in row]
        assert not missing, f"the README's {stage} row does not name {missing}"


def test_the_readme_states_every_read_limit_as_it_is():
    """The limits on what lossbarcode reads live in lossbarcode.choices; the README states
    each one with its value."""
    from lossbarcode import choices

    readme = " ".join((ROOT / "README.md").read_text().split())
    names = [n for n in dir(choices) if n.startswith("MAX_")]
    assert len(names) >= 6
    for name in names:
        value = getattr(choices, name)
        unit = next(((value // 2**s, u) for s, u in ((30, "GiB"), (20, "MiB"), (10, "KiB"))
                     if value % 2**s == 0), None) if name.endswith("BYTES") else (value, "")
        text = f"{unit[0]} {unit[1]}".strip() + f" (`{name}`"
        assert text in readme, f"the README does not state {text!r}"
