"""Client keys: generation, hashing, and turning a bearer token into a team."""
