"""The background worker: submit, reconcile and expire loops over database leases."""
