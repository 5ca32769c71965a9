"""Commands outside the DAG: `python -m tasks.tools.<command>`.

card (the dataset card of what `dvc repro` made) · provenance (where a face comes from, what holds
an artist's work) · paper_run (the paper-scale model in one command, on a GPU) · convert (the
published Illustration2Vec caffemodels to safetensors) · webserve (serve the browser generator).
Unlike a stage, a tool may read the whole params.yaml and call the stages' functions."""
