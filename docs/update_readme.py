"""Fill README.md's generated blocks from the code and result files that own their numbers.

    python docs/update_readme.py

Each block sits between ``<!-- generated:NAME ... -->`` and ``<!-- /generated:NAME -->``;
``tests/test_readme.py`` fails while a block and its source disagree.
"""

from __future__ import annotations

import re
from pathlib import Path

from tyche_lib.core._rows import rows_reference_markdown

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
SRM_RESULTS = ROOT / "bench" / "srm_results.md"


def _section(markdown: str, heading: str) -> str:
    """The body of a ``## heading`` section."""
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", markdown, flags=re.S | re.M)
    if match is None:
        raise ValueError(f"no '## {heading}' section")
    return match.group(1).strip()


def rows_block() -> str:
    """The table of the fixed columns, as docs/rows.md has it."""
    lines = rows_reference_markdown().splitlines()
    return "\n".join(line for line in lines if line.startswith("|"))


def srm_block() -> str:
    """The summary bench/srm_power.py wrote."""
    return _section(SRM_RESULTS.read_text(), "Summary")


BLOCKS = {"rows": rows_block, "srm": srm_block}


def render(readme: str) -> str:
    """``readme`` with every generated block filled from its source."""
    for name, make in BLOCKS.items():
        pattern = re.compile(rf"(<!-- generated:{name}\b[^\n]*-->\n)(.*?)(<!-- /generated:{name} -->)", re.S)
        if not pattern.search(readme):
            raise ValueError(f"README.md has no generated:{name} block")
        readme = pattern.sub(lambda m, make=make: m.group(1) + make() + "\n" + m.group(3), readme)
    return readme


def main() -> None:
    README.write_text(render(README.read_text()))
    print(f"updated {README}")


if __name__ == "__main__":
    main()
