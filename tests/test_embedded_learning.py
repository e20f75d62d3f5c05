"""An application that embeds ltrr learns online through ``Pipeline.feedback``: the open
pipeline's own learners learn in place, so its next answer reflects the feedback."""

from __future__ import annotations

import pytest
import test_silence

from ltrr.errors import RunError
from ltrr.runtime.pipeline import Pipeline
from ltrr.types import Query

# the toy pipeline of the silence tests: two listing arms, an epsilon_greedy policy
registry = test_silence.registry
make_plan = test_silence.make_plan


def test_an_open_pipeline_learns_feedback_in_place(make_plan, registry):
    plan = make_plan(window=None)
    with Pipeline(plan, registry=registry) as p:
        policy = p.components["policy"]
        before = p.run(Query("probe-0", "query 0")).action.pmf
        decisions = p.run_batch([Query(f"r{i}", "query 0") for i in range(30)])
        # reward whatever gave arm y the whole budget; nothing else
        events = [{"request_id": d.request_id, "entity_id": d.ranking[0].entity_id,
                   "type": "click", "position": 1}
                  for d in decisions if d.action.allocation.get("y") == 4]
        assert events
        report = p.feedback(events)
        assert report["learners"]["policy"]["learned"] == len(events)
        assert policy.learned == len(events)      # the pipeline's own object learned
        after = p.run(Query("probe-1", "query 0")).action.pmf
        best = max(after, key=lambda ap: ap[1])[0]
        assert after != before and best == {"y": 4}


def test_a_bad_event_is_refused_naming_its_index_and_field(make_plan, registry):
    plan = make_plan(window=None)
    with Pipeline(plan, registry=registry) as p:
        d = p.run(Query("r0", "query 0"))
        with pytest.raises(RunError) as err:
            p.feedback([{"request_id": d.request_id, "entity_id": "x-1", "type": "click"},
                        {"request_id": d.request_id, "entity_id": "x-1", "type": "clik"}])
        assert str(err.value.where) == "events[1]" and err.value.field == "type"
        assert p.components["policy"].learned == 0          # nothing half-ingested


def test_the_in_process_example_learns_a_query_nothing_names(music_spec, tmp_path):
    """examples/online/learn_in_process.py on the music pipeline: three plays teach the
    memory arm an artist for a query no field matches, and the same open pipeline then
    returns it (the example exits 1 otherwise)."""
    import subprocess
    import sys
    from pathlib import Path

    import yaml

    # the session's indexes, linked into a state of this test's own (it logs and learns)
    data = yaml.safe_load(music_spec.read_text())
    built = Path(data["state_dir"])
    data["state_dir"] = str(tmp_path / "state")
    (tmp_path / "state").mkdir()
    for entry in built.iterdir():
        if entry.is_dir() and not entry.name.endswith(".learned") \
                and entry.name not in ("decisions", "events"):
            (tmp_path / "state" / entry.name).symlink_to(entry, target_is_directory=True)
    spec = tmp_path / "music.yaml"
    spec.write_text(yaml.safe_dump(data, sort_keys=False))
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, str(root / "examples/online/learn_in_process.py"),
                           str(spec)], capture_output=True, text=True, timeout=600,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "before: 289 at rank None", done.stdout
    assert "memory" in lines[-1] and lines[-1].startswith("after:  289 at rank "), done.stdout
