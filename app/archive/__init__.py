"""Keeping what was paid for: every succeeded job's outputs, copied from PoYo's expiring
URLs into our own storage (a local directory or S3-compatible object storage) and served
from poyo-relay's own stable URL."""
