"""Reports the API keeps and serves (inspection; the drill's lives in api/drill.py for now)."""
