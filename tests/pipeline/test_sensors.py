"""The landing sensor: new files → partitions and one run request; the same files again → none."""

import json

import dagster as dg

from tyche_assets.ingest.sensors import landing_sensor
from tyche_assets.partitions import experiment_partitions, round_partitions


def evaluate(project, cursor):
    with dg.build_sensor_context(instance=project.instance, cursor=cursor, resources=project.defs.resources) as ctx:
        return landing_sensor(ctx)


def test_landing_sensor_requests_each_new_content_once(project):
    project.add_experiment("flip")
    rows = project.simulate("flip", 1, 500)
    project.land("flip", 1, rows)

    first = evaluate(project, None)
    assert [r.partition_key.keys_by_dimension for r in first.run_requests] == [
        {"experiment": "flip", "round": "r000001"}
    ]
    assert project.instance.get_dynamic_partitions(round_partitions.name) == ["r000001"]
    assert project.instance.get_dynamic_partitions(experiment_partitions.name) == ["flip"]

    again = evaluate(project, first.cursor)
    assert again.run_requests == []

    project.land("flip", 1, rows.iloc[:-1])  # re-dropped with different content
    changed = evaluate(project, again.cursor)
    assert len(changed.run_requests) == 1
    assert changed.run_requests[0].run_key != first.run_requests[0].run_key

    project.land("flip", 2, project.simulate("flip", 2, 300))
    held = evaluate(project, changed.cursor)  # round 1 has not published the plan for round 2 yet
    assert held.run_requests == []
    assert project.instance.get_dynamic_partitions(round_partitions.name) == ["r000001"]

    assert project.run_round("flip", 1).success
    second_round = evaluate(project, held.cursor)  # held rounds are not marked seen: requested now
    assert [r.partition_key.keys_by_dimension["round"] for r in second_round.run_requests] == ["r000002"]
    assert project.instance.get_dynamic_partitions(round_partitions.name) == ["r000001", "r000002"]


def test_a_cursor_from_three_digit_keys_requests_nothing_again(project):
    """Run keys and the cursor name a landed round as ``<experiment>/r001`` whatever the partition key layout,
    so rounds requested before the keys grew to six digits are not requested again."""
    project.add_experiment("flip")
    project.land("flip", 1, project.simulate("flip", 1, 300))
    first = evaluate(project, None)
    assert list(json.loads(first.cursor)) == ["flip/r001"]
    assert first.run_requests[0].run_key.startswith("flip/r001/")
    assert evaluate(project, first.cursor).run_requests == []
