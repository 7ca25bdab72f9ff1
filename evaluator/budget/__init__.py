"""The judge budget: its plan from the settings, allocation (pure), admission against the
caps, cap windows, the durable SQL source of the counters."""
