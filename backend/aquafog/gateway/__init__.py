"""The fog gateway: MQTT ingest, the single writer of the store, the command ledger."""
