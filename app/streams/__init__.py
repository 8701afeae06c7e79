"""Results without polling: a change feed of the jobs' audit trail, long-poll waiting and
server-sent event streams built on it."""
