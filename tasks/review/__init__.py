"""The review stage: the reviewed faces later stages take (tasks.artifacts.reviewed), a manual-review
queue, and a false-positive CSV that never loses a decision. The reviewer's merge:
`python -m tasks.review merge` (tasks.review.cli)."""
