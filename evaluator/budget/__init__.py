"""The judge budget: allocation (pure), admission against the caps, cap windows, the durable
SQL source of the counters."""
