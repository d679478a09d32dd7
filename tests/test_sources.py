"""Round sources: the landing folder and a SQL query against a real SQLite file.

Unreadable inputs fail as SourceError naming the file (and the column or delimiter); credentials
come from the environment and never appear in a repr, an error or a log record.
"""

import logging
import re
import sqlite3
import traceback

import pandas as pd
import pytest

from tyche_lib import (
    LandingFolderSource,
    RoundSource,
    SourceConfig,
    SourceError,
    SpecError,
    SqlSource,
    register_source,
    source_from_config,
)
from tyche_lib.core._sources import SOURCE_KINDS, _without_secrets

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


def _landing(tmp_path):
    folder = tmp_path / "landing" / "exp" / "round=1"
    folder.mkdir(parents=True)
    return LandingFolderSource(root=tmp_path), folder


def _parquet_bytes(tmp_path):
    ROWS.to_parquet(tmp_path / "whole.parquet", index=False)
    return (tmp_path / "whole.parquet").read_bytes()


def _empty_csv(folder, tmp_path):
    (folder / "visitors.csv").write_bytes(b"")
    return "visitors.csv", ["0 bytes"]


def _semicolon_csv(folder, tmp_path):
    ROWS.to_csv(folder / "visitors.csv", sep=";", index=False)
    return "visitors.csv", ["visitor_id;arm;y", "looks ';'-delimited", "comma-separated"]


def _tab_csv(folder, tmp_path):
    ROWS.to_csv(folder / "visitors.csv", sep="\t", index=False)
    return "visitors.csv", ["looks '\\t'-delimited"]


def _empty_parquet(folder, tmp_path):
    (folder / "visitors.parquet").write_bytes(b"")
    return "visitors.parquet", ["0 bytes"]


def _truncated_parquet(folder, tmp_path):
    whole = _parquet_bytes(tmp_path)
    (folder / "visitors.parquet").write_bytes(whole[: len(whole) // 2])
    return "visitors.parquet", ["not a readable parquet file"]


def _other_file_type(folder, tmp_path):
    ROWS.to_csv(folder / "a.csv", index=False)
    ROWS.to_json(folder / "b.json")
    return "b.json", ["was not read", ".csv and .parquet"]


def _folder_in_round(folder, tmp_path):
    ROWS.to_csv(folder / "a.csv", index=False)
    (folder / "part=2").mkdir()
    return "part=2", ["was not read"]


def _different_columns(folder, tmp_path):
    ROWS.to_csv(folder / "a.csv", index=False)
    ROWS.rename(columns={"y": "converted"}).to_parquet(folder / "b.parquet", index=False)
    return "b.parquet", ["a.csv", "['converted']", "['y']"]


def _no_data_files(folder, tmp_path):
    (folder / ".DS_Store").write_bytes(b"finder")
    return "", ["no data files"]


UNREADABLE = [
    _empty_csv,
    _semicolon_csv,
    _tab_csv,
    _empty_parquet,
    _truncated_parquet,
    _other_file_type,
    _folder_in_round,
    _different_columns,
    _no_data_files,
]


@pytest.mark.parametrize("plant", UNREADABLE, ids=[p.__name__.strip("_") for p in UNREADABLE])
def test_an_unreadable_round_is_a_source_error_naming_the_file(tmp_path, plant):
    src, folder = _landing(tmp_path)
    name, details = plant(folder, tmp_path)
    with pytest.raises(SourceError) as caught:
        src.load_round("exp", 1)
    message = str(caught.value)
    assert caught.value.location == f"landing/exp/round=1/{name}".rstrip("/") and caught.value.location in message
    for detail in details:
        assert detail in message, message
    # The sensor still sees the round (unless nothing but hidden files landed), so its run fails loudly.
    assert src.available_rounds("exp") == ([] if plant is _no_data_files else [1])


def test_header_only_csv_reads_as_zero_rows_and_adds_none(tmp_path):
    src, folder = _landing(tmp_path)
    ROWS.iloc[:0].to_csv(folder / "a.csv", index=False)
    empty = src.load_round("exp", 1)
    assert empty.empty and list(empty.columns) == list(ROWS.columns)
    ROWS.to_parquet(folder / "b.parquet", index=False)
    loaded = src.load_round("exp", 1)
    pd.testing.assert_frame_equal(loaded, ROWS)  # the parquet file's types are kept


def test_extra_columns_are_kept_and_files_read_in_name_order(tmp_path):
    src, folder = _landing(tmp_path)
    extra = ROWS.assign(browser=["firefox", "safari"], country=["DE", "FR"])
    # Written out of name order: the rows still come in file-name order.
    extra.iloc[1:].to_csv(folder / "b.csv", index=False)
    extra.iloc[:1][["country", *ROWS.columns, "browser"]].to_parquet(folder / "a.parquet", index=False)
    loaded = src.load_round("exp", 1)
    assert loaded["visitor_id"].tolist() == ["007", "008"]
    assert set(loaded.columns) == set(extra.columns)
    assert loaded["browser"].tolist() == ["firefox", "safari"]


def test_fingerprint_depends_on_content_not_on_landing_order(tmp_path):
    first, folder_1 = _landing(tmp_path / "one")
    second, folder_2 = _landing(tmp_path / "two")
    ROWS.iloc[:1].to_csv(folder_1 / "a.csv", index=False)
    ROWS.iloc[1:].to_csv(folder_1 / "b.csv", index=False)
    ROWS.iloc[1:].to_csv(folder_2 / "b.csv", index=False)
    ROWS.iloc[:1].to_csv(folder_2 / "a.csv", index=False)
    assert first.fingerprint("exp", 1) == second.fingerprint("exp", 1)
    (folder_2 / "notes.txt").write_text("rerun of round 1")
    assert first.fingerprint("exp", 1) != second.fingerprint("exp", 1)


PASSWORD = "s3cr3t-planted"
QUERY = "SELECT visitor_id, arm, y FROM events WHERE experiment_id = :experiment_id AND round = :round"


def _no_password(*texts):
    for text in texts:
        assert PASSWORD not in text, text


@pytest.mark.parametrize("driver", ["postgresql", "postgresql+psycopg2"])
def test_credentials_come_from_the_environment_and_are_never_shown(tmp_path, monkeypatch, caplog, driver):
    caplog.set_level(logging.DEBUG)
    db = tmp_path / "warehouse.db"
    with sqlite3.connect(db) as conn:
        ROWS.assign(experiment_id="exp", round=1).to_sql("events", conn, index=False)
    monkeypatch.setenv("TYCHE_TEST_DB_PASSWORD", PASSWORD)
    monkeypatch.setenv("TYCHE_TEST_DB_PATH", str(db))

    rounds_query = "SELECT DISTINCT round FROM events WHERE experiment_id = :experiment_id"
    sqlite = source_from_config(
        SourceConfig("sql", {"url": "sqlite:///${TYCHE_TEST_DB_PATH}", "query": QUERY, "rounds_query": rounds_query}),
        root=tmp_path,
    )
    assert sqlite.available_rounds("exp") == [1] and sqlite.load_round("exp", 1)["y"].tolist() == [1, 0]
    assert "${TYCHE_TEST_DB_PATH}" in repr(sqlite)  # kept unresolved on the object

    url = f"{driver}://user:${{TYCHE_TEST_DB_PASSWORD}}@127.0.0.1:1/db"
    remote = source_from_config(SourceConfig("sql", {"url": url, "query": QUERY}), root=tmp_path)
    assert isinstance(remote, SqlSource) and remote.url == url
    _no_password(repr(remote), str(remote), str(vars(remote)))
    with pytest.raises(SourceError) as failed:
        remote.load_round("exp", 1)
    assert "TYCHE_TEST_DB_PASSWORD" in str(failed.value)
    assert failed.value.__cause__ is None and failed.value.__context__ is None  # the driver's error is not attached
    _no_password(*traceback.format_exception(failed.value))

    literal = url.replace("${TYCHE_TEST_DB_PASSWORD}", PASSWORD)
    with pytest.raises(SpecError, match=re.escape("${VAR}")) as refused:
        source_from_config(SourceConfig("sql", {"url": literal, "query": QUERY}), root=tmp_path)
    bad_options = {"url": literal, "query": QUERY, "pasword": PASSWORD}
    with pytest.raises(SpecError, match="options do not fit") as misfit:
        source_from_config(SourceConfig("sql", bad_options), root=tmp_path)
    _no_password(str(refused.value), str(misfit.value), repr(misfit.value.value))

    monkeypatch.delenv("TYCHE_TEST_DB_PASSWORD")
    with pytest.raises(SourceError, match="environment variable TYCHE_TEST_DB_PASSWORD .* is not set"):
        remote.load_round("exp", 1)
    _no_password(*(r.getMessage() for r in caplog.records), caplog.text)


def test_a_password_a_driver_echoes_is_removed():
    url = f"postgresql://user:{PASSWORD}@db.internal/warehouse"
    echoed = f"could not connect with {url} (dsn: user=user password={PASSWORD} host=db.internal)"
    cleaned = _without_secrets(echoed, url)
    assert PASSWORD not in cleaned and "postgresql://user:***@db.internal/warehouse" in cleaned
