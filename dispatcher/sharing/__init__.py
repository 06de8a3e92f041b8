"""What leaves the company: affiliates' filtered exports and k-anonymous statistics."""
