"""Write ``docs/rows.md``, the reference of a round's columns, from the row schema.

Run ``python docs/generate_rows_reference.py`` after changing ``tyche_lib/core/_rows.py``;
``tests/test_schema.py`` fails while the file and the schema disagree.
"""

from pathlib import Path

from tyche_lib.core._rows import rows_reference_markdown

TARGET = Path(__file__).with_name("rows.md")


def main() -> None:
    TARGET.write_text(rows_reference_markdown())
    print(f"wrote {TARGET}")


if __name__ == "__main__":
    main()
