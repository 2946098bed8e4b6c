"""HTTP mechanisms every endpoint shares: error bodies, conditional requests, pagination."""
