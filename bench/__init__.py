"""`python -m bench`: the full saga under open-loop load, measured against ceilings from the same run."""
