"""The tag stage: the 34 Make.Girls.Moe attributes for every reviewed face."""
