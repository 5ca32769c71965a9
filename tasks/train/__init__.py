"""The train stage: export the reviewed, tagged faces, then run models.training_loop."""
