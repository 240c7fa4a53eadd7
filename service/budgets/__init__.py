"""Budgets: periods, which budgets apply to a request, and the stores that enforce them."""
