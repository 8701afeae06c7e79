"""Client webhooks: tell a job's `webhook_url` when the job ends (Standard Webhooks)."""
