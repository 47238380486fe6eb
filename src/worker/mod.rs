//! The worker pool (issue 5): supervised workers, typed handlers, autoscaling, breakers, rate limits, batching.
