"""moeflow stage logic: plain typed functions, no Prefect imports required."""
