"""What every service needs: event contracts and thin plumbing for Kafka, MongoDB, Redis, metrics."""
