"""The review stage: a manual-review queue and a false-positive CSV that never loses a decision.

Later stages take their faces from `tasks.review.run.reviewed_faces(params)` (and list
${review.decisions} among their DVC deps). The reviewer's merge: `python -m tasks.review merge`
(tasks.review.cli)."""
