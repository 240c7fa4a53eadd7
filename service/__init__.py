"""Farebox service: the proxy, budgets, ledger, admin API and everything else with I/O."""
