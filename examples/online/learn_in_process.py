"""Online learning inside your own application: open a pipeline once, answer queries,
hand it the users' feedback, and the next answer reflects it — no server, no reopen.

    ltrr index pipelines/music.yaml
    python examples/online/learn_in_process.py pipelines/music.yaml

A query nothing in the catalog names ("songs for my gym") gets a play of one artist from
three users; the memory arm learns that query → artist pair, and the artist comes back
for the same query from then on. (docs/feedback.md, "Learning online in your application")
"""

from __future__ import annotations

import sys

from ltrr.compiler import load_plan
from ltrr.runtime.pipeline import Pipeline
from ltrr.types import Query

QUERY = "songs for my gym"
WANTED = "289"          # Britney Spears in the Last.fm catalog


def rank_of(decision, entity: str) -> int | None:
    ranked = [r.entity_id for r in decision.ranking]
    return ranked.index(entity) + 1 if entity in ranked else None


def main(spec: str) -> int:
    plan = load_plan(spec)
    with Pipeline(plan, log_decisions=True) as pipeline:
        before = pipeline.run(Query("gym-0", QUERY, user_id="u0"))
        print(f"before: {WANTED} at rank {rank_of(before, WANTED)}")
        for n in range(1, 4):
            d = pipeline.run(Query(f"gym-{n}", QUERY, user_id=f"u{n}"))
            # the user did not find it in the results and played it from elsewhere: an
            # event for the request, with its own entity
            report = pipeline.feedback([{"request_id": d.request_id, "entity_id": WANTED,
                                         "type": "play", "user_id": f"u{n}"}])
            print(f"feedback {n}: learned by {', '.join(sorted(report['learners']))}")
        after = pipeline.run(Query("gym-4", QUERY, user_id="u9"))
        found_by = {c.arm for r in after.ranking if r.entity_id == WANTED
                    for c in r.sources}
        print(f"after:  {WANTED} at rank {rank_of(after, WANTED)} (found by "
              f"{', '.join(sorted(found_by)) or 'no arm'})")
    return 0 if rank_of(after, WANTED) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "pipelines/music.yaml"))
