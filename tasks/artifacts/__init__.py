"""The artifacts stages exchange: one module per artifact, with its schema, writer, reader and one
version constant. A stage reads another stage's output only through these modules (and the path
dvc.yaml hands it), never through the other stage's code.

images (scrape: manifest, rejected) · boxes (scrape -> detect: a release's recorded faces) ·
faces (detect: faces, per-image table, crop shards, face_id) · detector (detect: its settings) ·
decisions (review/false_positives.csv and the people-edited CSV reader) · reviewed (review: the faces
that pass) · tags (the MGM tag layout, tags.parquet) · tagger (tag: the backend and its settings) ·
trainset (train: the training dataset) · generator (train: the EMA generator file) · release (the
release manifest) · optout (optout.csv) · optout_log (the takedown audit log)."""
