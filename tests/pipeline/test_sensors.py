"""The landing sensor: new files → partitions and one run request; the same files again → none."""

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
    assert [r.partition_key.keys_by_dimension for r in first.run_requests] == [{"experiment": "flip", "round": "r001"}]
    adds = {req.partitions_def_name: list(req.partition_keys) for req in first.dynamic_partitions_requests}
    assert adds[round_partitions.name] == ["r001"]
    assert experiment_partitions.name in adds

    again = evaluate(project, first.cursor)
    assert again.run_requests == []

    project.land("flip", 1, rows.iloc[:-1])  # re-dropped with different content
    changed = evaluate(project, again.cursor)
    assert len(changed.run_requests) == 1
    assert changed.run_requests[0].run_key != first.run_requests[0].run_key

    project.land("flip", 2, project.simulate("flip", 2, 300))
    second_round = evaluate(project, changed.cursor)
    assert [r.partition_key.keys_by_dimension["round"] for r in second_round.run_requests] == ["r002"]
