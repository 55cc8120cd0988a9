"""The gateway's store: schema, engine (the one place that opens the database) and queries."""
