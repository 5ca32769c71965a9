"""The release stage: the dataset as URLs and labels, without pixels (data/release/). Its format is
tasks.artifacts.release, which the `release` scrape source (tasks.scrape.rebuild) reads back."""
