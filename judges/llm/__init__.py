"""Model endpoints: the judge client, reply reading, rate limits, generator, embedder."""
