"""The scrape stage: polite, resumable image collection into a content-addressed store."""
