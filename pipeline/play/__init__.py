"""Players: drive the game with the newest published weights, get unstuck, stream the live view, push offline checkpoints, export published weights to files."""
