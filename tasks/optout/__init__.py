"""Takedowns after the fact: optout.csv (git-tracked, edited by people) names posts, artists, tags,
URLs or images to leave out. The scrape stage is the one place it is applied (tasks.scrape.takedown):
matching posts are never downloaded again, images already kept leave the store and the manifest,
and with them every later artifact; each removal goes into the audit log (tasks.optout.audit)."""
