"""The render stage: sample sheets from the EMA generator, and the generator's metrics."""
