//! Metrics per queue and kind, the Prometheus text renderer, and alert rules (issue 5).
