"""Round sources: the landing folder and a SQL query against a real SQLite file."""

import sqlite3

import pandas as pd
import pytest

from tyche_lib import LandingFolderSource, RoundSource, SourceConfig, SpecError, register_source, source_from_config
from tyche_lib.core._sources import SOURCE_KINDS

ROWS = pd.DataFrame({"visitor_id": ["007", "008"], "arm": ["a", "b"], "y": [1, 0]})


def test_landing_folder_reads_csv_and_parquet_and_fingerprints(tmp_path):
    src = source_from_config(SourceConfig("landing", {"path": "landing"}), root=tmp_path)
    assert isinstance(src, LandingFolderSource)
    assert src.load_round("exp", 1).empty and src.available_rounds("exp") == []
    folder = tmp_path / "landing" / "exp" / "round=1"
    folder.mkdir(parents=True)
    ROWS.iloc[:1].to_csv(folder / "a.csv", index=False)
    ROWS.iloc[1:].to_parquet(folder / "b.parquet", index=False)
    (tmp_path / "landing" / "exp" / "round=2").mkdir()  # empty round: not available
    loaded = src.load_round("exp", 1)
    assert loaded["visitor_id"].tolist() == ["007", "008"]  # ids stay text
    assert src.available_rounds("exp") == [1]
    before = src.fingerprint("exp", 1)
    assert before == src.fingerprint("exp", 1)
    ROWS.iloc[:1].assign(y=0).to_csv(folder / "a.csv", index=False)
    assert src.fingerprint("exp", 1) != before


def test_sql_source_against_sqlite_file(tmp_path):
    db = tmp_path / "warehouse.db"
    with sqlite3.connect(db) as conn:
        pd.concat(
            [ROWS.assign(experiment_id="exp", round=1), ROWS.assign(experiment_id="exp", round=2, y=[0, 0])]
        ).to_sql("events", conn, index=False)
    config = SourceConfig(
        "sql",
        {
            "url": "sqlite:///warehouse.db",
            "query": "SELECT visitor_id, arm, y FROM events WHERE experiment_id = :experiment_id AND round = :round",
            "rounds_query": "SELECT DISTINCT round FROM events WHERE experiment_id = :experiment_id",
        },
    )
    src = source_from_config(config, root=tmp_path)
    assert src.available_rounds("exp") == [1, 2]
    assert src.load_round("exp", 2)["y"].tolist() == [0, 0]
    assert src.load_round("other", 1).empty
    assert src.fingerprint("exp", 1) != src.fingerprint("exp", 2)


def test_bad_source_configs_name_the_field(tmp_path):
    with pytest.raises(SpecError, match="source.kind"):
        source_from_config(SourceConfig("ftp", {}), root=tmp_path)
    with pytest.raises(SpecError, match="options do not fit"):
        source_from_config(SourceConfig("landing", {"folder": "x"}), root=tmp_path)
    with pytest.raises(SpecError, match=":round"):
        source_from_config(SourceConfig("sql", {"url": "sqlite:///x.db", "query": "SELECT 1"}), root=tmp_path)


def test_a_new_source_is_one_small_class(tmp_path):
    @register_source("in_memory_test")
    class InMemorySource(RoundSource):
        def __init__(self, root="."):
            pass

        def load_round(self, experiment_id, round):
            return ROWS.assign(round=round)

    try:
        assert source_from_config(SourceConfig("in_memory_test"), root=tmp_path).load_round("e", 3)["round"].eq(3).all()
    finally:
        SOURCE_KINDS.pop("in_memory_test")
