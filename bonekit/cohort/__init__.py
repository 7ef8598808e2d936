"""Cohorts: what serves studies and screening over many scans.

- :mod:`~bonekit.cohort.stats`: the validation statistics of the seed papers (``bonekit stats``);
- :mod:`~bonekit.cohort.cli`: the command line.
"""
