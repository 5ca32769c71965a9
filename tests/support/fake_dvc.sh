#!/bin/sh
# A stand-in for `dvc repro <stage>`: what DVC prints on stdout and a stage logs on stderr
# (`LEVEL logger: message`, no timestamp), interleaved as they come (flows._stage.repro relays both).
echo "Running stage '$2':"
echo "INFO tasks.stage: $2: 52 faces" >&2
echo "WARNING tasks.taggers.choice: NO TAGGER WEIGHTS" >&2
echo "  indented DVC hint"
