"""One round from the shell: python -m tyche_assets.run_round <experiment> <round>."""

from tyche_assets.run_round import main


def test_a_round_runs_from_the_shell_and_a_held_one_says_why(project, monkeypatch, capsys):
    monkeypatch.setenv("DAGSTER_HOME", str(project.root / "dagster_home"))
    project.add_experiment("flip")
    project.land("flip", 1, project.simulate("flip", 1, 2_000))
    project.land("flip", 3, project.simulate("flip", 1, 500).assign(round=3))

    assert main(["flip", "1", "--root", str(project.root)]) == 0
    out = capsys.readouterr().out
    checks = [line.split()[1:3] for line in out.splitlines() if line.strip().startswith("check ")]
    assert sorted(checks) == [
        ["posterior_convergence", "PASS"],
        ["round_visitors_probabilities", "PASS"],
        ["round_visitors_quality", "PASS"],
        ["round_visitors_sample_ratio", "PASS"],
    ]
    assert "the plan for round 2 is" in out and (project.root / "plans" / "flip" / "r000002.json").exists()

    assert main(["flip", "3", "--root", str(project.root)]) == 1  # round 2 never ran: round 3 is held
    err = capsys.readouterr().err
    assert "round 3 of flip refused: round 2 has no published plan for round 3" in err
    assert "no plan published; the plan in force stays in force" in err
