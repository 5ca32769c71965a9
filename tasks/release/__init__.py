"""The release: the dataset as URLs and labels, without pixels (data/release/), and what reads one
back (the `release` scrape source, tasks.scrape.release)."""
