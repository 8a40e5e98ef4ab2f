"""Post-call analysis through the user's own LLM: summary, data to a schema, outcome (docs/analysis.md)."""
