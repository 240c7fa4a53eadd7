"""The ledger: charge events, the outbox writer and the append-only table."""
