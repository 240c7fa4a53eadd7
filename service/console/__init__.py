"""The web console at /console: fine-tuning jobs, spend and budgets for a team, and an overview for admins."""
