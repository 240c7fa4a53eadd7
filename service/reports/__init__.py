"""Finance reports from the ledger: spend by group and period, monthly statements, reconciliation."""
