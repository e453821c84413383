"""Execute the tutorial notebooks and keep only outputs that nbval checks.

Cells marked ``# NBVAL_CHECK_OUTPUT`` keep their (deterministic) outputs as the reference nbval
compares against; every other output, execution count and the widget state are stripped, so
the committed notebooks hold nothing that changes between runs.

    .venv/bin/python scripts/refresh_notebooks.py [notebooks/01_quickstart.ipynb ...]
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent


def refresh(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        cell.metadata.pop("execution", None)
        if "# NBVAL_CHECK_OUTPUT" not in cell.source:  # nbval needs the count of a checked cell
            cell.execution_count = None
            cell.outputs = []
        else:  # warnings name local paths: never a stable reference
            cell.outputs = [o for o in cell.outputs if not (o.output_type == "stream" and o.name == "stderr")]
    nb.metadata.pop("widgets", None)
    nbformat.write(nb, path)
    print(f"refreshed {path.relative_to(ROOT)}")


if __name__ == "__main__":
    paths = [Path(p).resolve() for p in sys.argv[1:]] or sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))
    for p in paths:
        refresh(p)
