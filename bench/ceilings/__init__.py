"""What this machine allows without the saga: the broker alone, a relay chain of trivial hops, and the
datastore alone, measured in the same run as the saga so that the ratios compare like with like."""
