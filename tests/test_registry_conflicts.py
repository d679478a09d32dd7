"""find_conflicts: overlapping dates × overlapping audiences × shares past 100%, and layers."""

import datetime as dt

from tyche_lib import RegistryEntry, find_conflicts, spec_from_dict

D = dt.date


def entry(id, share, start=None, end=None, audience=None, layer=None, status="running"):
    return RegistryEntry(
        id=id, status=status, start_date=start, end_date=end, audience=audience or {}, traffic_share=share, layer=layer
    )


def pairs(conflicts):
    return {c.experiments for c in conflicts}


def test_overlapping_dates_audiences_and_shares_conflict_and_the_report_names_the_overlap():
    a = entry("alpha", 0.6, D(2026, 1, 1), D(2026, 3, 31), {"country": ("DE", "FR")})
    b = entry("beta", 0.5, D(2026, 3, 1), None, {"country": ("FR", "IT"), "device": ("mobile",)})
    [conflict] = find_conflicts([a, b])
    assert conflict.experiments == ("alpha", "beta")
    assert conflict.kind == "traffic"
    assert conflict.window == (D(2026, 3, 1), D(2026, 3, 31))
    assert conflict.audience == {"country": ("FR",), "device": ("mobile",)}
    assert conflict.shares == {"alpha": 0.6, "beta": 0.5}
    assert abs(conflict.total_share - 1.1) < 1e-12
    text = str(conflict)
    for part in (
        "alpha",
        "beta",
        "2026-03-01 to 2026-03-31",
        "country in {FR}",
        "device in {mobile}",
        "60%",
        "50%",
        "110%",
    ):
        assert part in text, part


def test_dates_that_do_not_overlap_do_not_conflict_and_open_ended_dates_overlap():
    jan = entry("jan", 0.8, D(2026, 1, 1), D(2026, 1, 31))
    feb = entry("feb", 0.8, D(2026, 2, 1), D(2026, 2, 28))
    assert find_conflicts([jan, feb]) == []
    # One shared day is an overlap (windows are inclusive).
    assert pairs(find_conflicts([jan, entry("feb", 0.8, D(2026, 1, 31), D(2026, 2, 28))])) == {("feb", "jan")}
    # No end date runs on forever; no start date has always run.
    forever = entry("forever", 0.8, D(2025, 6, 1), None)
    always = entry("always", 0.8, None, D(2025, 7, 1))
    [c1] = find_conflicts([forever, feb])
    assert c1.window == (D(2026, 2, 1), D(2026, 2, 28))
    [c2] = find_conflicts([forever, always])
    assert c2.window == (D(2025, 6, 1), D(2025, 7, 1))
    undated = entry("undated", 0.8)
    assert pairs(find_conflicts([undated, jan])) == {("jan", "undated")}
    assert find_conflicts([undated, entry("other", 0.8)])[0].window == (None, None)
    assert "open start to open end" in str(find_conflicts([undated, entry("other", 0.8)])[0])


def test_audiences_overlap_unless_a_shared_covariate_has_disjoint_levels():
    de = entry("de", 0.7, audience={"country": ("DE",)})
    fr = entry("fr", 0.7, audience={"country": ("FR",)})
    assert find_conflicts([de, fr]) == []
    # Different covariates restricted: German mobile visitors are in both.
    mobile = entry("mobile", 0.7, audience={"device": ("mobile",)})
    [c] = find_conflicts([de, mobile])
    assert c.audience == {"country": ("DE",), "device": ("mobile",)}
    # An unrestricted audience overlaps everything.
    everyone = entry("everyone", 0.7)
    assert pairs(find_conflicts([de, everyone])) == {("de", "everyone")}
    # Disjoint on one covariate is enough, whatever the others share.
    de_mobile = entry("de_mobile", 0.7, audience={"country": ("DE",), "device": ("mobile",)})
    fr_mobile = entry("fr_mobile", 0.7, audience={"country": ("FR",), "device": ("mobile",)})
    assert find_conflicts([de_mobile, fr_mobile]) == []


def test_shares_that_fit_do_not_conflict():
    assert find_conflicts([entry("a", 0.5), entry("b", 0.5)]) == []  # exactly 100% fits
    assert find_conflicts([entry("a", 0.7), entry("b", 0.3)]) == []  # 0.7 + 0.3 is not read as > 1
    assert pairs(find_conflicts([entry("a", 0.5), entry("b", 0.51)])) == {("a", "b")}


def test_one_layer_splits_its_traffic_so_only_the_layer_total_counts():
    a = entry("a", 0.6, layer="checkout")
    b = entry("b", 0.4, layer="checkout")
    assert find_conflicts([a, b]) == []  # 100% of the layer, and exclusive by construction
    c = entry("c", 0.2, D(2026, 5, 1), D(2026, 5, 31), layer="checkout")
    [conflict] = find_conflicts([a, b, c])
    assert conflict.kind == "layer" and conflict.layer == "checkout"
    assert conflict.experiments == ("a", "b", "c")
    assert conflict.window == (D(2026, 5, 1), D(2026, 5, 31))
    assert abs(conflict.total_share - 1.2) < 1e-12
    assert "layer 'checkout'" in str(conflict) and "120%" in str(conflict)
    # Layer members that never run together reuse the same slice of the layer.
    early = entry("early", 0.9, D(2026, 1, 1), D(2026, 1, 31), layer="search")
    late = entry("late", 0.9, D(2026, 2, 1), None, layer="search")
    assert find_conflicts([early, late]) == []
    # Different layers are not exclusive: the pair is checked like any other.
    other = entry("other", 0.5, layer="search")
    assert pairs(find_conflicts([a, other])) == {("a", "other")}


def test_stopped_and_shipped_experiments_hold_no_traffic():
    live = entry("live", 0.8)
    assert find_conflicts([live, entry("old", 0.8, status="stopped"), entry("won", 0.8, status="shipped")]) == []
    for status in ("draft", "paused"):
        assert pairs(find_conflicts([live, entry("next", 0.8, status=status)])) == {("live", "next")}
    assert find_conflicts([entry("a", 0.7, layer="l"), entry("b", 0.7, layer="l", status="stopped")]) == []


def test_specs_are_read_directly_and_yaml_levels_are_normalised():
    def spec(id, **extra):
        return spec_from_dict(
            {"id": id, "arms": ["control", "b"], "metrics": {"primary": {"name": "y", "family": "binary"}}, **extra}
        )

    returning = spec("returning", traffic_share=0.8, audience={"returning": [True]}, start_date="2026-01-01")
    returning_text = spec("returning_text", traffic_share=0.8, audience={"returning": "true"}, end_date="2026-02-01")
    new = spec("new", traffic_share=0.8, audience={"returning": [False]})
    [c] = find_conflicts([returning, returning_text, new])
    assert c.experiments == ("returning", "returning_text")
    assert c.audience == {"returning": ("true",)}
    assert c.window == (D(2026, 1, 1), D(2026, 2, 1))
