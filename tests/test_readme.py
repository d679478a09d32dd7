"""README's numbers and tables come from code: its generated blocks equal what generates them."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _updater():
    spec = importlib.util.spec_from_file_location("update_readme", ROOT / "docs" / "update_readme.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_blocks_are_up_to_date():
    readme = (ROOT / "README.md").read_text()
    assert _updater().render(readme) == readme, "run: python docs/update_readme.py"


def test_blocks_hold_the_sources_content():
    updater = _updater()
    readme = (ROOT / "README.md").read_text()
    assert "| `visitor_id` | string | yes |" in updater.rows_block() and updater.rows_block() in readme
    assert "False alarms" in updater.srm_block() and updater.srm_block() in readme
