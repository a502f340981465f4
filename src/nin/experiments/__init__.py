"""Experiments: the paper's tables, reproducing them into records, the results page, re-checking records,
and the localization study of the class maps."""
