"""The fetch stage: the external files the DAG needs (nagadomi's anime-face cascade), fetched by
`dvc repro` itself and pinned by sha256, so a fresh clone's `dvc repro` gets what detect needs."""
