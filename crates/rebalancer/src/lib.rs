//! Meters and the rebalancer state machine for roundrobin-core (layer L1). Work in progress.
