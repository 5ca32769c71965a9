"""moeflow's stages as plain typed functions, and the layers they share.

- `tasks/<stage>/` (fetch, scrape, detect, review, tag, release, train, render, export): one package
  per DVC stage, run as `python -m tasks.<stage>`. A stage never imports another stage.
- Shared layers: `tasks/artifacts/` (one module per artifact two stages exchange: schema, writer,
  reader, version), `tasks/params/` (one module per params.yaml section), the infrastructure
  (`errors`, `typed`, `fileio`, `stage`, `reports`, `dag`, `http`, `ratelimit`) and two components
  more than one stage runs (`detectors`, `taggers/`).
- `tasks/tools/`: commands outside the DAG (dataset card, provenance, paper-scale run, weight conversion)."""
