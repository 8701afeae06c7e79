"""Jobs: the model, the forward-only state machine, the lifecycle service, the queries."""
