"""From the app to a job: sampling, the wire format, enqueue, the drain, the sweeper."""
