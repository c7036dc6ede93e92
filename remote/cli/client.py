"""Client-side commands (`keygen`, `connect`, ...): they run on the user's computer."""

COMMANDS: list = []
