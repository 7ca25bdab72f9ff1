"""Score statistics: rollups, trends, regression detection, alerts and the check job."""
