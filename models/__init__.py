"""moeflow torch modules, losses and weight loading (importable without Prefect)."""
