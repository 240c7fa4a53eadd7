"""Admin operations (teams, keys, budgets, model sharing) and their HTTP API."""
