"""The scene-sync wire protocol and its server (issue 3: not built yet)."""
