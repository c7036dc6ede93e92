"""Server-side commands (`up`, `down`, `status`): they run on the remote machine."""

COMMANDS: list = []
